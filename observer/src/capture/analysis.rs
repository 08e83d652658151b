//! What one executable file offers the probes, worked out once per build and kept on disk.
//!
//! Reading a large binary (symbol tables, BoringSSL's code signature, Go's function table,
//! rustls's code shape) takes up to a few hundred milliseconds; a process waiting at `execve`
//! for that must not wait twice for the same build, even across restarts of the observer.
//! Analyses are kept by ELF build id (copies of one build in containers and reinstalls share
//! it), else by a hash of the file's contents (the Codex CLI has no build id; npm gives every
//! file it installs the same modification time, so a reinstall could otherwise meet the
//! previous build's analysis), found again quickly through the file's identity and times.
use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use object::{
    Endianness, Object, ObjectSymbol,
    read::elf::{Dyn, ElfFile64, ProgramHeader},
};
use serde::{Deserialize, Serialize};

use crate::private_file;

use super::{
    TlsLibrary,
    boringssl::{self, Verdict},
    c_library::{self, Site},
    elf::{self, TLS_FUNCTIONS},
    golang::{self, GoBinary},
    rustls,
    untrusted::{self, ANALYSIS_TIME_BOUND, Deadline, Elf, Image, Unreadable},
};

/// Bumped whenever what an analysis holds, or how it is found, changes: older entries are
/// then ignored.
const FORMAT: u32 = 5;

/// Symbols whose import tells that a program opens network connections itself.
const NETWORK_IMPORTS: &[&str] = &["connect", "send", "sendto", "sendmsg"];
/// Symbols whose import tells that a program may load code (which may open connections) later.
const LOADER_IMPORTS: &[&str] = &["dlopen", "dlmopen"];

/// One uprobe a file offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub program: String,
    pub offset: u64,
    /// Passed to the program as its attach cookie (its low byte).
    pub library: TlsLibrary,
    /// The function probed, for messages.
    pub function: String,
    /// What the program needs to know about this build, in the cookie's upper bytes
    /// (`observer_common::cookie`); 0 for most.
    #[serde(default)]
    pub detail: u64,
}

impl Probe {
    fn new(program: &str, offset: u64, library: TlsLibrary, function: &str) -> Probe {
        Probe {
            program: program.to_owned(),
            offset,
            library,
            function: function.to_owned(),
            detail: 0,
        }
    }

    /// The probes of rustls found without symbols.
    fn rustls(located: &rustls::Located) -> Vec<Probe> {
        use observer_common::cookie::{DECRYPTER_SHIFT, LEARNS_DECRYPTER, OK_TAG_SHIFT};
        let send = "rustls::common_state::CommonState::send_appdata_encrypt";
        let decrypt = "<_ as rustls::crypto::cipher::MessageDecrypter>::decrypt";
        let mut probes = vec![
            Probe {
                detail: LEARNS_DECRYPTER | located.decrypter_field << DECRYPTER_SHIFT,
                ..Probe::new("rustls_send", located.send, TlsLibrary::Rustls, send)
            },
            Probe::new("rustls_send_return", located.send, TlsLibrary::Rustls, send),
        ];
        for &offset in &located.decrypters {
            probes.push(Probe {
                detail: u64::from(located.ok_tag) << OK_TAG_SHIFT
                    | located.decrypter_field << DECRYPTER_SHIFT,
                ..Probe::new("rustls_decrypt", offset, TlsLibrary::Rustls, decrypt)
            });
            probes.push(Probe::new(
                "rustls_decrypt_return",
                offset,
                TlsLibrary::Rustls,
                decrypt,
            ));
        }
        probes
    }
}

/// What a file offers the probes and says about the programs that use it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAnalysis {
    /// TLS plaintext and socket I/O: attached while a process using the file is followed.
    pub capture: Vec<Probe>,
    /// Kept on a process no longer followed (a connection to a new peer).
    pub sentinel: Vec<Probe>,
    /// The dynamic loader's hook: libraries loaded late.
    pub loader: Vec<Probe>,
    /// What TLS stack the capture probes serve and how they were found, for the log.
    pub tls: Option<String>,
    /// Why a TLS stack present in the file is not probed, for a warning.
    pub refused: Option<Refusal>,
    pub imports_network: bool,
    pub imports_loader: bool,
    /// `DT_NEEDED` names.
    pub needed: Vec<String>,
    /// `DT_RUNPATH`, else `DT_RPATH`, entries as written (`$ORIGIN` unexpanded).
    pub search_path: Vec<String>,
    /// `PT_INTERP`.
    pub interpreter: Option<String>,
}

/// A TLS stack the probes cannot serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// BoringSSL whose functions could not be told apart with certainty.
    BoringSsl { why: String },
    /// rustls whose plaintext functions no symbol names (stripped, or inlined), and whose send
    /// and decrypt sites its code could not tell with certainty.
    Rustls { why: String },
    /// A Go program the probes cannot read (too old, another architecture, no tables).
    Go {
        version: Option<String>,
        reason: String,
    },
    /// A file past a bound of `untrusted` (size, sections, time): not analysed at all.
    OverBound { why: String },
}

impl Refusal {
    /// The warning for the file at `path`: what happened and what to do.
    pub fn warning(&self, path: &str) -> String {
        match self {
            Refusal::BoringSsl { why } => format!(
                "{path} embeds BoringSSL, but its SSL_read/SSL_write could not be identified \
                 with certainty ({why}); not attaching, so its TLS traffic will not be seen. \
                 Please report this build (its version and `file` output)."
            ),
            Refusal::Rustls { why } => format!(
                "{path} embeds rustls with no symbol naming where its plaintext passes, and the \
                 code could not tell it with certainty ({why}); not attaching, so its TLS \
                 traffic will not be seen. Please report this build (its version and `file` \
                 output)."
            ),
            Refusal::Go { version, reason } => format!(
                "not capturing TLS of the Go program {path} ({}): {reason}. Its calls will not \
                 be seen; rebuild it with Go 1.17 or later for amd64 to capture them.",
                version.as_deref().unwrap_or("Go version unknown"),
            ),
            Refusal::OverBound { why } => format!(
                "not analysing {path}: {why}, past what one file may cost the observer; \
                 programs using it are not probed through it. If it is a genuine program, \
                 please report it."
            ),
        }
    }
}

impl FileAnalysis {
    fn over_bound(why: String) -> FileAnalysis {
        FileAnalysis {
            refused: Some(Refusal::OverBound { why }),
            ..FileAnalysis::default()
        }
    }

    /// Whether the file was refused for its cost (such analyses are not kept on disk: the time
    /// bound depends on the machine's load).
    pub fn over_bound_refusal(&self) -> bool {
        matches!(self.refused, Some(Refusal::OverBound { .. }))
    }

    /// Whether programs using the file can make network calls (or TLS ones) from the start.
    pub fn networked(&self) -> bool {
        self.imports_network || self.tls.is_some()
    }
}

/// Reads the file at `path` (mapped, not copied) and works out what it offers.
pub fn analyse(path: &Path) -> io::Result<FileAnalysis> {
    let file = File::open(path)?;
    // SAFETY: read only; a file truncated underneath us could fault, the risk every reader of
    // mapped binaries takes (these are programs being run).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(analyse_bytes(&map, path))
}

/// What the file whose bytes are `bytes` offers, whatever those bytes are: anything but an
/// ELF file within the bounds of `untrusted` offers nothing; one past a bound (size, sections,
/// the time its analysis takes) offers nothing and says why in [`FileAnalysis::refused`].
/// `shown` names it in the log.
pub fn analyse_bytes(bytes: &[u8], shown: &Path) -> FileAnalysis {
    let deadline = Deadline::after(ANALYSIS_TIME_BOUND);
    let parsed = match untrusted::parse(bytes) {
        Ok(parsed) => parsed,
        Err(Unreadable::NotObject) => return FileAnalysis::default(),
        Err(Unreadable::OverBound(why)) => return FileAnalysis::over_bound(why),
    };
    let mut analysis = FileAnalysis::default();
    tls_probes(&parsed, bytes, &deadline, shown, &mut analysis);
    let sites = c_library::locate(&parsed, &deadline);
    let probes = |sites: Vec<Site>| -> Vec<Probe> {
        sites
            .into_iter()
            .map(|site| Probe::new(site.program, site.offset, site.library, site.function))
            .collect()
    };
    analysis.capture.extend(probes(sites.capture));
    analysis.sentinel = probes(sites.sentinel);
    analysis.loader = probes(sites.loader);
    for symbol in parsed
        .dynamic_symbols()
        .take_while(|_| deadline.left())
        .filter(|s| s.is_undefined())
    {
        let Ok(name) = symbol.name() else { continue };
        let name = name.split('@').next().unwrap_or(name);
        analysis.imports_network |= NETWORK_IMPORTS.contains(&name);
        analysis.imports_loader |= LOADER_IMPORTS.contains(&name);
    }
    if let Ok(elf) = ElfFile64::<Endianness, _>::parse(Image(bytes)) {
        dynamic_section(&elf, Image(bytes), &deadline, &mut analysis);
    }
    if deadline.passed() {
        return FileAnalysis::over_bound(format!(
            "its analysis took longer than {} s",
            ANALYSIS_TIME_BOUND.as_secs()
        ));
    }
    analysis
}

/// The TLS functions the file defines: by symbol, by code signature (BoringSSL without
/// symbols), or through Go's tables.
fn tls_probes(
    elf: &Elf,
    bytes: &[u8],
    deadline: &Deadline,
    shown: &Path,
    analysis: &mut FileAnalysis,
) {
    let mut functions = elf::find_functions(elf, TLS_FUNCTIONS, deadline, shown);
    let mut method = "by symbol".to_owned();
    if !functions.iter().any(|(f, _)| f.moves_data) {
        match boringssl::locate(elf, deadline) {
            Verdict::Absent => {}
            Verdict::Located {
                read_offset,
                write_offset,
                evidence,
            } => {
                functions = vec![
                    (elf::BORINGSSL_READ, read_offset),
                    (elf::BORINGSSL_WRITE, write_offset),
                ];
                method = format!("without symbols, by code signature: {evidence}");
            }
            Verdict::Refused(why) => analysis.refused = Some(Refusal::BoringSsl { why }),
        }
    }
    let mut found = Vec::new();
    let probe = |point: elf::AttachPoint| {
        Probe::new(point.program, point.offset, point.library, point.function)
    };
    if functions.iter().any(|(f, _)| f.moves_data) {
        analysis.capture.extend(
            functions
                .iter()
                .flat_map(|(f, offset)| f.attach_points(*offset))
                .map(probe),
        );
        found.push(format!(
            "{} probes ({}), found {method}",
            functions[0].0.library.as_str(),
            elf::describe_offsets(&functions)
        ));
    } else {
        match rustls::locate(elf, deadline) {
            rustls::Verdict::Absent => {}
            rustls::Verdict::Located(located) => {
                analysis.capture.extend(Probe::rustls(&located));
                found.push(format!(
                    "rustls probes (send_appdata_encrypt at file offset {:#x}, {} decrypters), \
                     found without symbols, by code shape: {}",
                    located.send,
                    located.decrypters.len(),
                    located.evidence
                ));
            }
            rustls::Verdict::Refused(why) => analysis.refused = Some(Refusal::Rustls { why }),
        }
    }
    match golang::inspect(elf, bytes, deadline) {
        GoBinary::Go(go) => {
            analysis
                .capture
                .extend(go.attach_points().into_iter().map(probe));
            analysis
                .sentinel
                .extend(go.sentinel_points().into_iter().map(probe));
            // A Go program opens connections itself (no imports to tell).
            analysis.imports_network |= go.net.is_some();
            if let Some(tls) = &go.tls {
                found.push(format!(
                    "Go crypto/tls probes ({}, bounds from {}, {} RET instructions of Read{}{})",
                    go.version.as_deref().unwrap_or("Go version unknown"),
                    go.bounds_from,
                    tls.read_returns.len(),
                    if tls.close.is_some() { ", Close" } else { "" },
                    if go.net.is_some() {
                        ", and its sockets at internal/poll.(*FD)"
                    } else {
                        ""
                    }
                ));
            }
        }
        GoBinary::Unsupported { version, reason } => {
            analysis.refused = Some(Refusal::Go { version, reason });
        }
        GoBinary::NotGo => {}
    }
    if !found.is_empty() {
        analysis.tls = Some(found.join(" and "));
    }
}

/// Libraries (`DT_NEEDED`) and search-path entries kept per file, at most: real programs need
/// a few dozen libraries; a file claiming more is not believed past this.
const MAX_NEEDED: usize = 256;
const MAX_SEARCH_PATH: usize = 64;
/// The longest interpreter path kept (the kernel's own limit for it).
const MAX_INTERPRETER_BYTES: usize = 4096;

fn dynamic_section<'a>(
    elf: &ElfFile64<'a, Endianness, Image<'a>>,
    data: Image<'a>,
    deadline: &Deadline,
    analysis: &mut FileAnalysis,
) {
    let endian = elf.endian();
    analysis.interpreter = elf
        .elf_program_headers()
        .iter()
        .find_map(|header| header.interpreter(endian, data).ok().flatten())
        .filter(|bytes| bytes.len() <= MAX_INTERPRETER_BYTES)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned());
    let sections = elf.elf_section_table();
    let Ok(Some((entries, link))) = sections.dynamic(endian, data) else {
        return;
    };
    let Ok(strings) = sections.strings(endian, data, link) else {
        return;
    };
    let (mut runpath, mut rpath) = (Vec::new(), Vec::new());
    for entry in entries.iter().take_while(|_| deadline.left()) {
        let Some(tag) = entry.tag32(endian) else {
            continue;
        };
        let list = match tag {
            object::elf::DT_NEEDED if analysis.needed.len() < MAX_NEEDED => &mut analysis.needed,
            object::elf::DT_RUNPATH if runpath.len() < MAX_SEARCH_PATH => &mut runpath,
            object::elf::DT_RPATH if rpath.len() < MAX_SEARCH_PATH => &mut rpath,
            _ => continue,
        };
        let value = u32::try_from(entry.d_val(endian))
            .ok()
            .and_then(|offset| strings.get(offset).ok());
        let Some(value) = value else {
            continue;
        };
        let value = String::from_utf8_lossy(value);
        if tag == object::elf::DT_NEEDED {
            list.push(value.into_owned());
        } else {
            let room = MAX_SEARCH_PATH - list.len();
            list.extend(value.split(':').take(room).map(str::to_owned));
        }
    }
    analysis.search_path = if runpath.is_empty() { rpath } else { runpath };
}

/// A file as the cache knows it in memory: identity and version on disk. The change time
/// (which no one can set back, unlike the modification time) tells a file rewritten in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileVersion {
    dev: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileVersion {
    fn of(metadata: &fs::Metadata) -> FileVersion {
        let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
        FileVersion {
            dev: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Analyses by file, in memory and (when a directory is given) on disk; shared by the threads
/// that look analyses up and the one that works them out.
pub struct AnalysisCache {
    directory: Option<PathBuf>,
    memory: Mutex<HashMap<FileVersion, Arc<FileAnalysis>>>,
    cached: AtomicU64,
    read: AtomicU64,
    over_bound: AtomicU64,
}

/// What the cache has done since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnalysisCounts {
    /// Analyses found in memory or on disk.
    pub cached: u64,
    /// Files read and analysed.
    pub read: u64,
    /// Files refused for what analysing them would cost (size, sections, time).
    pub over_bound: u64,
}

/// Past this many files the in-memory cache starts over (the disk keeps everything).
const MEMORY_ENTRIES: usize = 4096;

/// A file not in the cache, mapped, and where its analysis goes on disk.
struct Missing {
    version: FileVersion,
    map: memmap2::Mmap,
    disk_name: Option<DiskName>,
}

/// Where a file's analysis is kept on disk.
enum DiskName {
    /// By build id.
    Build(PathBuf),
    /// By the file's identity and times (looked up without reading the file), and by a hash
    /// of its contents (worked out when that first lookup fails).
    Contents { identity: PathBuf },
}

impl AnalysisCache {
    /// `directory`: where analyses persist (created 0700, files 0600); none: memory only.
    pub fn new(directory: Option<PathBuf>) -> AnalysisCache {
        let directory = directory.and_then(|dir| {
            let dir = dir.join(format!("analysis-v{FORMAT}"));
            match private_file::create_dir_all(&dir, true) {
                Ok(()) => Some(dir),
                Err(error) => {
                    log::warn!(
                        "cannot keep analyses of executables in {}: {error}; each restart will \
                         read every program again",
                        dir.display()
                    );
                    None
                }
            }
        });
        AnalysisCache {
            directory,
            memory: Mutex::new(HashMap::new()),
            cached: AtomicU64::new(0),
            read: AtomicU64::new(0),
            over_bound: AtomicU64::new(0),
        }
    }

    /// The analysis of the file at `path` if it is known (in memory or on disk): never reads
    /// more of the file than its build id.
    pub fn cached(&self, path: &Path) -> io::Result<Option<Arc<FileAnalysis>>> {
        Ok(self.lookup(path)?.ok())
    }

    /// The analysis of the file at `path` (from memory, disk, or read now).
    pub fn get(&self, path: &Path) -> io::Result<Arc<FileAnalysis>> {
        let missing = match self.lookup(path)? {
            Ok(known) => return Ok(known),
            Err(missing) => missing,
        };
        let by_contents = match &missing.disk_name {
            Some(DiskName::Contents { identity }) => {
                let name = identity.with_file_name(contents_name(&missing.map));
                if let Some(known) = load(&name) {
                    store(identity, &known);
                    self.cached.fetch_add(1, Ordering::Relaxed);
                    return Ok(self.remember(missing.version, known));
                }
                Some(name)
            }
            _ => None,
        };
        self.read.fetch_add(1, Ordering::Relaxed);
        let analysis = analyse_bytes(&missing.map, path);
        if analysis.over_bound_refusal() {
            self.over_bound.fetch_add(1, Ordering::Relaxed);
        } else {
            let names = match &missing.disk_name {
                Some(DiskName::Build(name)) => vec![name],
                Some(DiskName::Contents { identity }) => {
                    by_contents.iter().chain([identity]).collect()
                }
                None => Vec::new(),
            };
            for name in names {
                store(name, &analysis);
            }
        }
        Ok(self.remember(missing.version, analysis))
    }

    pub fn counts(&self) -> AnalysisCounts {
        AnalysisCounts {
            cached: self.cached.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            over_bound: self.over_bound.load(Ordering::Relaxed),
        }
    }

    /// The known analysis, or the mapped file to analyse.
    fn lookup(&self, path: &Path) -> io::Result<Result<Arc<FileAnalysis>, Missing>> {
        let file = File::open(path)?;
        let version = FileVersion::of(&file.metadata()?);
        if let Some(analysis) = self
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version)
        {
            self.cached.fetch_add(1, Ordering::Relaxed);
            return Ok(Ok(analysis.clone()));
        }
        // SAFETY: read only; a file truncated underneath us could fault, the risk every reader
        // of mapped binaries takes (these are programs being run).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let disk_name = self
            .directory
            .as_ref()
            .map(|dir| disk_name(dir, &map, &version));
        let from_disk = disk_name.as_ref().and_then(|name| match name {
            DiskName::Build(name) | DiskName::Contents { identity: name } => load(name),
        });
        Ok(match from_disk {
            Some(analysis) => {
                self.cached.fetch_add(1, Ordering::Relaxed);
                Ok(self.remember(version, analysis))
            }
            None => Err(Missing {
                version,
                map,
                disk_name,
            }),
        })
    }

    fn remember(&self, version: FileVersion, analysis: FileAnalysis) -> Arc<FileAnalysis> {
        let analysis = Arc::new(analysis);
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        if memory.len() >= MEMORY_ENTRIES {
            memory.clear();
        }
        memory.insert(version, analysis.clone());
        analysis
    }
}

/// By build id when the file has one (copies of a build share it), else by contents.
fn disk_name(directory: &Path, bytes: &[u8], version: &FileVersion) -> DiskName {
    let build_id = untrusted::parse(bytes)
        .ok()
        .and_then(|elf| elf.build_id().ok().flatten().map(hex));
    match build_id {
        Some(id) => DiskName::Build(directory.join(format!("{id}-{}.json", version.size))),
        None => DiskName::Contents {
            identity: directory.join(format!(
                "file-{:x}-{:x}-{:x}-{:x}-{:x}.json",
                version.dev, version.inode, version.size, version.modified_ns, version.changed_ns
            )),
        },
    }
}

/// The name of the analysis of a file with these contents.
fn contents_name(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256-{}.json", hex(&Sha256::digest(bytes)))
}

fn load(name: &Path) -> Option<FileAnalysis> {
    serde_json::from_slice(&fs::read(name).ok()?).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Written to a private temporary name first, then renamed: a reader never sees half a file.
fn store(name: &Path, analysis: &FileAnalysis) {
    let temporary = name.with_extension(format!("tmp{}", std::process::id()));
    let written = serde_json::to_vec(analysis)
        .map_err(io::Error::other)
        .and_then(|bytes| {
            private_file::create(&temporary)
                .and_then(|mut file| io::Write::write_all(&mut file, &bytes))
        })
        .and_then(|()| fs::rename(&temporary, name));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        log::debug!("keeping the analysis in {}: {error}", name.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_library_offers_socket_probes_and_a_sentinel() {
        let path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !path.exists() {
            return;
        }
        let analysis = analyse(path).expect("libc is readable");
        assert!(analysis.capture.iter().any(|p| p.program == "socket_send"));
        assert_eq!(analysis.sentinel.len(), 1);
        assert!(analysis.tls.is_none());
    }

    #[test]
    fn programs_say_what_they_import_and_need() {
        let path = Path::new("/usr/bin/curl");
        if !path.exists() {
            return;
        }
        let analysis = analyse(path).expect("curl is readable");
        assert!(
            analysis.needed.iter().any(|n| n.starts_with("libcurl")),
            "{analysis:?}"
        );
        assert!(analysis.interpreter.is_some());
    }

    #[test]
    fn analyses_persist_privately_and_are_found_again() {
        let path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !path.exists() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let first = AnalysisCache::new(Some(dir.path().to_path_buf()))
            .get(path)
            .expect("analysed");
        let again = AnalysisCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(again.cached(path).expect("readable"), Some(first.clone()));
        let second = again.get(path).expect("read back");
        assert_eq!(first, second);
        let counts = again.counts();
        assert_eq!((counts.cached, counts.read), (2, 0));
        let stored = dir.path().join(format!("analysis-v{FORMAT}"));
        let mode = |p: &Path| fs::metadata(p).expect("exists").mode() & 0o777;
        assert_eq!(mode(&stored), 0o700);
        for entry in fs::read_dir(&stored).expect("listed") {
            assert_eq!(mode(&entry.expect("entry").path()), 0o600);
        }
    }

    #[test]
    fn files_without_a_build_id_are_known_by_their_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = rustls::example::executable_of(&Default::default());
        let (first, copy) = (dir.path().join("first"), dir.path().join("copy"));
        fs::write(&first, &program).expect("written");
        fs::write(&copy, &program).expect("written");
        let cache_dir = dir.path().join("cache");
        let analysed = AnalysisCache::new(Some(cache_dir.clone()))
            .get(&first)
            .expect("analysed");
        assert!(
            analysed
                .tls
                .as_deref()
                .is_some_and(|t| t.contains("rustls")),
            "{analysed:?}"
        );

        // Another copy, another observer: its identity is new, its contents known.
        let again = AnalysisCache::new(Some(cache_dir.clone()));
        assert_eq!(again.cached(&copy).expect("readable"), None);
        assert_eq!(again.get(&copy).expect("found"), analysed);
        let counts = again.counts();
        assert_eq!((counts.cached, counts.read), (1, 0));
        // And now by its identity too, without reading it.
        let third = AnalysisCache::new(Some(cache_dir));
        assert_eq!(
            third.cached(&copy).expect("readable"),
            Some(analysed.clone())
        );

        // Rewritten in place, same size, modification time set back: read again.
        let mut other = program.clone();
        other[0x40] ^= 1;
        let modified = fs::metadata(&copy)
            .expect("exists")
            .modified()
            .expect("mtime");
        fs::write(&copy, &other).expect("rewritten");
        File::options()
            .write(true)
            .open(&copy)
            .and_then(|f| f.set_modified(modified))
            .expect("mtime set back");
        let fourth = AnalysisCache::new(Some(dir.path().join("cache")));
        fourth.get(&copy).expect("analysed");
        assert_eq!(fourth.counts().read, 1);
    }
}
