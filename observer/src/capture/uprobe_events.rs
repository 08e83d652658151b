//! Uprobes switched on one process at a time.
//!
//! A uprobe attached for every process costs every process that maps the file (each call traps);
//! one opened for a single pid costs nothing elsewhere, since the kernel installs its breakpoint
//! only in address spaces a consumer asks for. But a uprobe opened through the `uprobe` PMU
//! (aya's attach) is a separate consumer per process, and every hit walks every consumer.
//!
//! So each probe is defined once, as a tracefs uprobe event (`uprobe_events`), with the BPF
//! program attached to it through an anchor perf event bound to a kernel thread (which never
//! maps the file, so the anchor installs no breakpoint). Following a process then opens one perf
//! event per probe bound to that process: all of them share the definition's single consumer,
//! whose filter lists the followed processes, and the program runs once per hit. Closing those
//! events unfollows the process without unregistering the probe.
use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::Write,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use perf_event_open_sys::{bindings, ioctls, perf_event_open};

use super::discover::FileId;

/// One probe definition: a program at a file offset, at entry or at return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub file: FileId,
    pub offset: u64,
    pub program: &'static str,
}

struct Definition {
    name: String,
    tracepoint_id: u64,
    _anchor: OwnedFd,
    _link: OwnedFd,
}

/// The probes this observer defined in tracefs. Dropping it removes them (the per-process
/// events opened with [`Self::enable_for`] must be closed first; the kernel refuses to remove a
/// definition in use).
pub struct UprobeEvents {
    tracefs: PathBuf,
    group: String,
    definitions: HashMap<ProbeKey, Definition>,
    next_name: u64,
    anchor_pid: i32,
}

impl UprobeEvents {
    pub fn new() -> Result<UprobeEvents> {
        let tracefs = tracefs_root().ok_or_else(|| {
            anyhow!(
                "tracefs is not mounted (looked at /sys/kernel/tracing and \
                 /sys/kernel/debug/tracing): mount it with `mount -t tracefs nodev \
                 /sys/kernel/tracing`"
            )
        })?;
        remove_stale_definitions(&tracefs);
        Ok(UprobeEvents {
            tracefs,
            group: format!("observer_{}", std::process::id()),
            definitions: HashMap::new(),
            next_name: 0,
            anchor_pid: kernel_thread().context("finding a kernel thread to anchor probes on")?,
        })
    }

    pub fn defined(&self) -> usize {
        self.definitions.len()
    }

    /// The tracepoint id of the probe `key` (defining it the first time), ready to be enabled
    /// for processes. `cookie` is what the program reads with `bpf_get_attach_cookie`.
    pub fn define(
        &mut self,
        key: ProbeKey,
        path: &Path,
        at_return: bool,
        program: BorrowedFd<'_>,
        cookie: u64,
    ) -> Result<u64> {
        if let Some(definition) = self.definitions.get(&key) {
            return Ok(definition.tracepoint_id);
        }
        // tracefs splits its commands on spaces: a path with one is given as an open fd.
        let opened;
        let target = if path.to_string_lossy().contains(char::is_whitespace) {
            opened = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()))
        } else {
            path.to_path_buf()
        };
        let started = std::time::Instant::now();
        let name = format!("p{}", self.next_name);
        self.next_name += 1;
        let kind = if at_return { 'r' } else { 'p' };
        self.control(&format!(
            "{kind}:{}/{name} {}:{:#x}",
            self.group,
            target.display(),
            key.offset
        ))
        .with_context(|| {
            format!(
                "defining a uprobe for {} at {} offset {:#x}",
                key.program,
                path.display(),
                key.offset
            )
        })?;
        let defined = self.tracepoint_id(&name).and_then(|tracepoint_id| {
            let anchor = open_event(tracepoint_id, self.anchor_pid)?;
            let link = link_program(program, &anchor, cookie)?;
            Ok(Definition {
                name: name.clone(),
                tracepoint_id,
                _anchor: anchor,
                _link: link,
            })
        });
        match defined {
            Ok(definition) => {
                log::debug!(
                    "defined {name} ({} at {} offset {:#x}) in {:?}",
                    key.program,
                    path.display(),
                    key.offset,
                    started.elapsed()
                );
                let id = definition.tracepoint_id;
                self.definitions.insert(key, definition);
                Ok(id)
            }
            Err(error) => {
                let _ = self.control(&format!("-:{}/{name}", self.group));
                Err(error)
            }
        }
    }

    /// Switches the probe on for one process; closing the returned fd switches it off.
    pub fn enable_for(&self, tracepoint_id: u64, pid: u32) -> Result<OwnedFd> {
        open_event(tracepoint_id, pid as i32)
    }

    fn tracepoint_id(&self, name: &str) -> Result<u64> {
        let path = self
            .tracefs
            .join("events")
            .join(&self.group)
            .join(name)
            .join("id");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds no tracepoint id", path.display()))
    }

    fn control(&self, command: &str) -> std::io::Result<()> {
        OpenOptions::new()
            .append(true)
            .open(self.tracefs.join("uprobe_events"))?
            .write_all(format!("{command}\n").as_bytes())
    }
}

impl Drop for UprobeEvents {
    fn drop(&mut self) {
        let names: Vec<String> = self.definitions.drain().map(|(_, d)| d.name).collect();
        for name in names {
            if let Err(error) = self.control(&format!("-:{}/{name}", self.group)) {
                log::debug!("removing uprobe {}/{name}: {error}", self.group);
            }
        }
    }
}

fn tracefs_root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| root.join("uprobe_events").exists())
}

/// Definitions left by observers that died without removing them (their group names a pid that
/// no longer runs this program).
fn remove_stale_definitions(tracefs: &Path) {
    let Ok(listing) = fs::read_to_string(tracefs.join("uprobe_events")) else {
        return;
    };
    let stale: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let event = rest.split_whitespace().next()?;
            let (group, _) = event.split_once('/')?;
            let pid: u32 = group.strip_prefix("observer_")?.parse().ok()?;
            let alive = fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .zip(fs::read_link("/proc/self/exe").ok())
                .is_some_and(|(theirs, ours)| theirs == ours);
            (!alive).then(|| format!("-:{event}\n"))
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    log::info!(
        "removing {} uprobe definitions left by observers that are gone",
        stale.len()
    );
    if let Ok(mut control) = OpenOptions::new()
        .append(true)
        .open(tracefs.join("uprobe_events"))
    {
        for command in stale {
            let _ = control.write_all(command.as_bytes());
        }
    }
}

/// A kernel thread's pid: kernel threads have no address space, so a probe event bound to one
/// never installs a breakpoint anywhere. kthreadd is pid 2 on every Linux host.
fn kernel_thread() -> Result<i32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let is_kernel_thread = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the command name, which is in parentheses and may hold spaces.
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().nth(6)?.parse::<u64>().ok()
            })
            .is_some_and(|flags| flags & PF_KTHREAD != 0)
    };
    if is_kernel_thread(2) {
        return Ok(2);
    }
    super::discover::all_pids()
        .into_iter()
        .find(|&pid| is_kernel_thread(pid))
        .map(|pid| pid as i32)
        .ok_or_else(|| {
            anyhow!(
                "no kernel thread visible in /proc (a pid namespace without the host's processes?)"
            )
        })
}

fn open_event(tracepoint_id: u64, pid: i32) -> Result<OwnedFd> {
    let mut attr = bindings::perf_event_attr {
        type_: bindings::PERF_TYPE_TRACEPOINT,
        size: size_of::<bindings::perf_event_attr>() as u32,
        config: tracepoint_id,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_2.wakeup_events = 1;
    // SAFETY: a fully initialised attr; the fd returned is ours.
    let fd = unsafe {
        perf_event_open(
            &mut attr,
            pid,
            -1,
            -1,
            u64::from(bindings::PERF_FLAG_FD_CLOEXEC) as libc::c_ulong,
        )
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        bail!("perf_event_open for pid {pid}: {error}");
    }
    // SAFETY: a new fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ioctl on our own perf event fd.
    if unsafe { ioctls::ENABLE(fd.as_raw_fd(), 0) } < 0 {
        bail!(
            "enabling a perf event for pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(fd)
}

/// Attaches `program` to the perf event with an attach cookie (`BPF_LINK_CREATE`, which the
/// `PERF_EVENT_IOC_SET_BPF` ioctl cannot do).
fn link_program(program: BorrowedFd<'_>, event: &OwnedFd, cookie: u64) -> Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PERF_EVENT: u32 = 41;
    /// `union bpf_attr` as `BPF_LINK_CREATE` reads it for a perf event.
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        bpf_cookie: u64,
    }
    let attr = LinkCreate {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: event.as_raw_fd() as u32,
        attach_type: BPF_PERF_EVENT,
        flags: 0,
        bpf_cookie: cookie,
    };
    // SAFETY: the attr outlives the call, and its size is passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreate,
            size_of::<LinkCreate>() as u32,
        )
    };
    if fd < 0 {
        bail!(
            "attaching a probe program: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
