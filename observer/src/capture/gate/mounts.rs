//! The filesystems to mark: every mount namespace's filesystems, read from mountinfo, each
//! with a path that reaches it from here.
use super::*;

/// A filesystem seen in a mount namespace, and a path that reaches it from here.
pub(super) struct Mount {
    pub(super) device: Device,
    pub(super) fstype: OsString,
    pub(super) path: PathBuf,
}

/// The filesystems to mark, in our mount namespace and in every other one a process is in
/// (containers), reached through that process's root.
pub(super) fn mounted_filesystems() -> Vec<Mount> {
    let mut namespaces = HashSet::new();
    let mut mounts = Vec::new();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            name.to_str()?.parse::<u32>().ok()?;
            Some(name)
        });
    for pid in std::iter::once(OsString::from("self")).chain(pids) {
        let proc = Path::new("/proc").join(&pid);
        let Ok(namespace) = std::fs::read_link(proc.join("ns/mnt")) else {
            continue;
        };
        if !namespaces.insert(namespace) {
            continue;
        }
        let Ok(mountinfo) = std::fs::read(proc.join("mountinfo")) else {
            continue;
        };
        let root = if pid == "self" {
            OsString::new()
        } else {
            proc.join("root").into_os_string()
        };
        for line in mountinfo.split(|&byte| byte == b'\n') {
            let Some(entry) = parse_mountinfo_line(line) else {
                continue;
            };
            if UNMARKED_FILESYSTEMS
                .iter()
                .any(|&skipped| entry.fstype == skipped)
            {
                continue;
            }
            let mut path = root.clone();
            path.push(&entry.mount_point);
            mounts.push(Mount {
                device: entry.device,
                fstype: entry.fstype,
                path: PathBuf::from(path),
            });
        }
    }
    mounts
}

pub(super) struct MountinfoEntry {
    pub(super) device: Device,
    pub(super) mount_point: OsString,
    pub(super) fstype: OsString,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// the device is the third field, the mount point the fifth, the type the first after `-`.
pub(super) fn parse_mountinfo_line(line: &[u8]) -> Option<MountinfoEntry> {
    let mut fields = line.split(|&byte| byte == b' ');
    let device = fields.nth(2)?;
    let mount_point = fields.nth(1)?;
    let fstype = fields.skip_while(|&field| field != b"-").nth(1)?;
    let (major, minor) = std::str::from_utf8(device).ok()?.split_once(':')?;
    Some(MountinfoEntry {
        device: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: OsString::from_vec(unescape_octal(mount_point)),
        fstype: OsString::from_vec(unescape_octal(fstype)),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
pub(super) fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&byte, tail)) = rest.split_first() {
        let code = tail
            .get(..3)
            .filter(|digits| digits.iter().all(|digit| (b'0'..=b'7').contains(digit)))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match code {
            Some(code) if byte == b'\\' => {
                out.push(code);
                rest = &tail[3..];
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    out
}
