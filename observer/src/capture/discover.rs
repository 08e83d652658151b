//! Finding the files that carry TLS code: what running processes map, and where the host keeps
//! its shared libraries.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::analysis::FileAnalysis;

/// A file's identity across mount namespaces: uprobes attach to inodes, so one file
/// mapped by many processes (or reached by many paths) is attached once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
}

impl FileId {
    pub fn of(path: &Path) -> Option<FileId> {
        let meta = fs::metadata(path).ok()?;
        let dev = meta.dev();
        Some(FileId {
            dev_major: libc::major(dev),
            dev_minor: libc::minor(dev),
            inode: meta.ino(),
        })
    }
}

/// An executable mapping of a process, with a path that reaches the file from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    pub id: FileId,
    pub host_path: PathBuf,
}

/// Files of a program's dependency closure looked at, at most.
const MAX_CLOSURE: usize = 64;

/// The files `exe` will map in process `pid`: itself, its interpreter and the libraries it
/// needs, as the loader would find them (its run path, then the usual directories), each
/// looked at through `analyse`.
pub fn closure(
    pid: u32,
    exe: &MappedFile,
    analyse: &mut impl FnMut(&MappedFile) -> Option<Arc<FileAnalysis>>,
) -> Vec<MappedFile> {
    let root = root_prefix(pid);
    let mut files = vec![exe.clone()];
    let mut index = 0;
    while index < files.len() && files.len() < MAX_CLOSURE {
        let file = files[index].clone();
        index += 1;
        let Some(analysis) = analyse(&file) else {
            continue;
        };
        let origin = fs::read_link(&file.host_path)
            .ok()
            .unwrap_or_else(|| file.host_path.clone());
        let origin = origin.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut wanted: Vec<PathBuf> = analysis
            .interpreter
            .iter()
            .map(|interpreter| PathBuf::from(format!("{root}{interpreter}")))
            .collect();
        for name in &analysis.needed {
            if let Some(path) = find_library(&root, name, &analysis.search_path, &origin) {
                wanted.push(path);
            }
        }
        for path in wanted {
            if let Some(id) = FileId::of(&path)
                && !files.iter().any(|f| f.id == id)
            {
                files.push(MappedFile {
                    id,
                    host_path: path,
                });
            }
        }
    }
    files
}

/// Every process on the host.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The executable file mappings of `pid` (the program and its shared libraries), deduplicated.
/// Paths of processes in other mount namespaces (containers) go through `/proc/PID/root`.
pub fn executable_mappings(pid: u32) -> Vec<MappedFile> {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let root = root_prefix(pid);
    let mut files: Vec<MappedFile> = Vec::new();
    for line in maps.lines() {
        let Some(file) = parse_maps_line(&root, line) else {
            continue;
        };
        if !files.iter().any(|f| f.id == file.id) {
            files.push(file);
        }
    }
    files
}

/// What to put before a path as `pid` sees it to reach the file from here: nothing when it shares
/// our root, else `/proc/PID/root`.
pub fn root_prefix(pid: u32) -> String {
    if shares_our_root(pid) {
        String::new()
    } else {
        format!("/proc/{pid}/root")
    }
}

/// Where the dynamic loader of a process with root `root` would find the library `name`: the
/// file's run path (`$ORIGIN` being `origin`, the directory of the file that needs it), then
/// the usual directories. `/etc/ld.so.conf` and `LD_LIBRARY_PATH` are not read.
pub fn find_library(root: &str, name: &str, run_path: &[String], origin: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(format!("{root}{name}")));
    }
    let origin = origin.to_string_lossy();
    let from_run_path = run_path.iter().map(|dir| {
        let dir = dir
            .replace("${ORIGIN}", &origin)
            .replace("$ORIGIN", &origin);
        // $ORIGIN is already a path from here; other entries are the process's paths.
        if dir.starts_with(&*origin) && !origin.is_empty() {
            PathBuf::from(dir).join(name)
        } else {
            PathBuf::from(format!("{root}{dir}")).join(name)
        }
    });
    let usual = LIBRARY_DIRS
        .iter()
        .map(|dir| PathBuf::from(format!("{root}{dir}")).join(name));
    from_run_path.chain(usual).find(|path| path.is_file())
}

/// TLS libraries (by name: `libssl*`, `libgnutls*`) in the directories of `pid`'s
/// `LD_LIBRARY_PATH`, reachable from here.
pub fn library_path_tls_libraries(pid: u32) -> Vec<PathBuf> {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    let Some(dirs) = environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"LD_LIBRARY_PATH="))
    else {
        return Vec::new();
    };
    let root = root_prefix(pid);
    String::from_utf8_lossy(dirs)
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .filter_map(|dir| fs::read_dir(format!("{root}{dir}")).ok())
        .flat_map(|entries| entries.flatten())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_tls_library_name)
        })
        .collect()
}

fn is_tls_library_name(name: &str) -> bool {
    name.starts_with("libssl.so") || name.starts_with("libgnutls.so")
}

/// Where the dynamic loaders of the distributions we run on look by default.
const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// Whether `pid` sees the same filesystem root as the observer: then its paths are ours, and
/// stay valid after it exits (a `/proc/PID/root/...` path dies with the process).
fn shares_our_root(pid: u32) -> bool {
    let theirs = FileId::of(Path::new(&format!("/proc/{pid}/root/")));
    theirs.is_some() && theirs == FileId::of(Path::new("/"))
}

/// One line of /proc/PID/maps; `root` prefixes the path (empty, or `/proc/PID/root`).
fn parse_maps_line(root: &str, line: &str) -> Option<MappedFile> {
    let mut fields = line.split_ascii_whitespace();
    let _range = fields.next()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let dev = fields.next()?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?;
    if !perms.contains('x') || inode == 0 || !path.starts_with('/') || fields.next().is_some() {
        // Anonymous, special ([vdso]) or deleted ("... (deleted)") mappings.
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    Some(MappedFile {
        id: FileId {
            dev_major: u32::from_str_radix(major, 16).ok()?,
            dev_minor: u32::from_str_radix(minor, 16).ok()?,
            inode,
        },
        host_path: PathBuf::from(format!("{root}{path}")),
    })
}

/// The host's own TLS libraries: the exec gate holds their opens, so that a process loading one
/// (even one that lives for milliseconds) is followed from its first call.
pub fn system_tls_libraries() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in LIBRARY_DIRS {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_tls_library_name(name) {
                found.push(entry.path());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_mappings_and_skips_the_rest() {
        let line = "7f3c1a200000-7f3c1a28e000 r-xp 00022000 fd:01 1837261    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        let file = parse_maps_line("/proc/42/root", line).expect("mapping");
        assert_eq!(
            file.id,
            FileId {
                dev_major: 0xfd,
                dev_minor: 1,
                inode: 1837261
            }
        );
        assert_eq!(
            file.host_path,
            PathBuf::from("/proc/42/root/usr/lib/x86_64-linux-gnu/libssl.so.3")
        );
        assert!(parse_maps_line("", "7ffd-7ffe r-xp 00000000 00:00 0    [vdso]").is_none());
        assert!(
            parse_maps_line("", "7f3c-7f3d r--p 00000000 fd:01 12    /usr/lib/libc.so.6").is_none()
        );
        assert!(
            parse_maps_line(
                "",
                "7f3c-7f3d r-xp 00000000 fd:01 12    /tmp/x.so (deleted)"
            )
            .is_none()
        );
    }

    #[test]
    fn sees_its_own_mappings_by_their_own_paths() {
        let own = executable_mappings(std::process::id());
        assert!(
            !own.is_empty(),
            "a running test maps at least its own executable"
        );
        assert!(
            own.iter().all(|f| !f.host_path.starts_with("/proc")),
            "{own:?}"
        );
    }
}
