//! What one executable file offers the probes, worked out once per build and kept on disk.
//!
//! Reading a large binary (symbol tables, BoringSSL's code signature, Go's function table)
//! takes up to a few hundred milliseconds; a process waiting at `execve` for that must not wait
//! twice for the same build, even across restarts of the observer. Analyses are kept by ELF
//! build id (copies of one build in containers and reinstalls share it), else by the file's
//! identity and modification time.
use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{
    Endianness, Object, ObjectSymbol,
    read::elf::{Dyn, ElfFile64, ProgramHeader},
};
use serde::{Deserialize, Serialize};

use crate::private_file;

use super::{
    TlsLibrary,
    boringssl::{Locator, Verdict},
    c_library::{self, Site},
    elf::{self, TLS_FUNCTIONS},
    golang::{self, GoBinary},
};

/// Bumped whenever what an analysis holds, or how it is found, changes: older entries are
/// then ignored.
const FORMAT: u32 = 3;

/// Symbols whose import tells that a program opens network connections itself.
const NETWORK_IMPORTS: &[&str] = &["connect", "send", "sendto", "sendmsg"];
/// Symbols whose import tells that a program may load code (which may open connections) later.
const LOADER_IMPORTS: &[&str] = &["dlopen", "dlmopen"];

/// One uprobe a file offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub program: String,
    pub offset: u64,
    /// Passed to the program as its attach cookie.
    pub library: TlsLibrary,
    /// The function probed, for messages.
    pub function: String,
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
    /// A Go program the probes cannot read (too old, another architecture, no tables).
    Go {
        version: Option<String>,
        reason: String,
    },
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
            Refusal::Go { version, reason } => format!(
                "not capturing TLS of the Go program {path} ({}): {reason}. Its calls will not \
                 be seen; rebuild it with Go 1.17 or later for amd64 to capture them.",
                version.as_deref().unwrap_or("Go version unknown"),
            ),
        }
    }
}

impl FileAnalysis {
    /// Whether programs using the file can make network calls (or TLS ones) from the start.
    pub fn networked(&self) -> bool {
        self.imports_network || self.tls.is_some()
    }
}

/// Reads `path` and works out what it offers.
pub fn analyse(path: &Path, boringssl: &mut Locator) -> io::Result<FileAnalysis> {
    let file = File::open(path)?;
    // SAFETY: read only; a file truncated underneath us could fault, the risk every reader of
    // mapped binaries takes (these are programs being run).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let Ok(parsed) = object::File::parse(&*map) else {
        return Ok(FileAnalysis::default());
    };
    let mut analysis = FileAnalysis::default();
    tls_probes(path, boringssl, &mut analysis)?;
    let sites = c_library::locate(&parsed);
    let probes = |sites: Vec<Site>| -> Vec<Probe> {
        sites
            .into_iter()
            .map(|site| Probe {
                program: site.program.to_owned(),
                offset: site.offset,
                library: site.library,
                function: site.function.to_owned(),
            })
            .collect()
    };
    analysis.capture.extend(probes(sites.capture));
    analysis.sentinel = probes(sites.sentinel);
    analysis.loader = probes(sites.loader);
    for symbol in parsed.dynamic_symbols().filter(|s| s.is_undefined()) {
        let Ok(name) = symbol.name() else { continue };
        let name = name.split('@').next().unwrap_or(name);
        analysis.imports_network |= NETWORK_IMPORTS.contains(&name);
        analysis.imports_loader |= LOADER_IMPORTS.contains(&name);
    }
    if let Ok(elf) = ElfFile64::<Endianness>::parse(&*map) {
        dynamic_section(&elf, &map, &mut analysis);
    }
    Ok(analysis)
}

/// The TLS functions the file defines: by symbol, by code signature (BoringSSL without
/// symbols), or through Go's tables.
fn tls_probes(path: &Path, boringssl: &mut Locator, analysis: &mut FileAnalysis) -> io::Result<()> {
    let mut functions = elf::find_functions(path, TLS_FUNCTIONS)?;
    let mut method = "by symbol".to_owned();
    if !functions.iter().any(|(f, _)| f.moves_data) {
        match boringssl.locate(path)? {
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
    let mut add = |point: elf::AttachPoint| {
        analysis.capture.push(Probe {
            program: point.program.to_owned(),
            offset: point.offset,
            library: point.library,
            function: point.function.to_owned(),
        })
    };
    if functions.iter().any(|(f, _)| f.moves_data) {
        functions
            .iter()
            .flat_map(|(f, offset)| f.attach_points(*offset))
            .for_each(&mut add);
        found.push(format!(
            "{} probes ({}), found {method}",
            functions[0].0.library.as_str(),
            elf::describe_offsets(&functions)
        ));
    }
    match golang::inspect(path)? {
        GoBinary::Go(go) => {
            go.attach_points().into_iter().for_each(&mut add);
            analysis
                .sentinel
                .extend(go.sentinel_points().into_iter().map(|point| Probe {
                    program: point.program.to_owned(),
                    offset: point.offset,
                    library: point.library,
                    function: point.function.to_owned(),
                }));
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
    Ok(())
}

fn dynamic_section(elf: &ElfFile64<'_, Endianness>, data: &[u8], analysis: &mut FileAnalysis) {
    let endian = elf.endian();
    analysis.interpreter = elf
        .elf_program_headers()
        .iter()
        .find_map(|header| header.interpreter(endian, data).ok().flatten())
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned());
    let sections = elf.elf_section_table();
    let Ok(Some((entries, link))) = sections.dynamic(endian, data) else {
        return;
    };
    let Ok(strings) = sections.strings(endian, data, link) else {
        return;
    };
    let (mut runpath, mut rpath) = (Vec::new(), Vec::new());
    for entry in entries {
        let Some(tag) = entry.tag32(endian) else {
            continue;
        };
        let Ok(value) = entry.string(endian, strings) else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match tag {
            object::elf::DT_NEEDED => analysis.needed.push(value),
            object::elf::DT_RUNPATH => runpath.extend(value.split(':').map(str::to_owned)),
            object::elf::DT_RPATH => rpath.extend(value.split(':').map(str::to_owned)),
            _ => {}
        }
    }
    analysis.search_path = if runpath.is_empty() { rpath } else { runpath };
}

/// A file as the cache knows it in memory: identity and version on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileVersion {
    dev: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

impl FileVersion {
    fn of(metadata: &fs::Metadata) -> FileVersion {
        FileVersion {
            dev: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
        }
    }
}

/// Analyses by file, in memory and (when a directory is given) on disk.
pub struct AnalysisCache {
    directory: Option<PathBuf>,
    memory: HashMap<FileVersion, Arc<FileAnalysis>>,
    boringssl: Locator,
    /// Analyses read from disk or memory, and worked out, since start.
    pub hits: u64,
    pub misses: u64,
}

/// Past this many files the in-memory cache starts over (the disk keeps everything).
const MEMORY_ENTRIES: usize = 4096;

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
            memory: HashMap::new(),
            boringssl: Locator::default(),
            hits: 0,
            misses: 0,
        }
    }

    /// The analysis of the file at `path` (from memory, disk, or read now).
    pub fn get(&mut self, path: &Path) -> io::Result<Arc<FileAnalysis>> {
        let metadata = fs::metadata(path)?;
        let version = FileVersion::of(&metadata);
        if let Some(analysis) = self.memory.get(&version) {
            self.hits += 1;
            return Ok(analysis.clone());
        }
        let disk_name = self
            .directory
            .as_ref()
            .map(|dir| dir.join(disk_name(path, &version)));
        let from_disk = disk_name
            .as_ref()
            .and_then(|name| fs::read(name).ok())
            .and_then(|bytes| serde_json::from_slice::<FileAnalysis>(&bytes).ok());
        let analysis = match from_disk {
            Some(analysis) => {
                self.hits += 1;
                analysis
            }
            None => {
                self.misses += 1;
                let analysis = analyse(path, &mut self.boringssl)?;
                if let Some(name) = &disk_name {
                    store(name, &analysis);
                }
                analysis
            }
        };
        if self.memory.len() >= MEMORY_ENTRIES {
            self.memory.clear();
        }
        let analysis = Arc::new(analysis);
        self.memory.insert(version, analysis.clone());
        Ok(analysis)
    }
}

/// The build id when the file has one (copies of a build share it), else the file's identity
/// and version.
fn disk_name(path: &Path, version: &FileVersion) -> String {
    let build_id = File::open(path).ok().and_then(|file| {
        // SAFETY: read only, see `analyse`.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let elf = object::File::parse(&*map).ok()?;
        elf.build_id().ok().flatten().map(hex)
    });
    match build_id {
        Some(id) => format!("{id}-{}.json", version.size),
        None => format!(
            "file-{:x}-{:x}-{:x}-{:x}.json",
            version.dev, version.inode, version.size, version.modified_ns
        ),
    }
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
        let analysis = analyse(path, &mut Locator::default()).expect("libc is readable");
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
        let analysis = analyse(path, &mut Locator::default()).expect("curl is readable");
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
        let mut again = AnalysisCache::new(Some(dir.path().to_path_buf()));
        let second = again.get(path).expect("read back");
        assert_eq!(first, second);
        assert_eq!((again.hits, again.misses), (1, 0));
        let stored = dir.path().join(format!("analysis-v{FORMAT}"));
        let mode = |p: &Path| fs::metadata(p).expect("exists").mode() & 0o777;
        assert_eq!(mode(&stored), 0o700);
        for entry in fs::read_dir(&stored).expect("listed") {
            assert_eq!(mode(&entry.expect("entry").path()), 0o600);
        }
    }
}
