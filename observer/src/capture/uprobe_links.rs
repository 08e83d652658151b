//! Uprobes switched on one process at a time, as `uprobe_multi` BPF links bound to a pid.
//!
//! A uprobe attached for every process costs every process that maps the file (each call
//! traps). One bound to a pid costs nothing elsewhere: the kernel installs its breakpoints only
//! in the address spaces a consumer asks for. Of the two ways to bind one to a pid, a perf event
//! opened for that pid also joins the process's perf context, which the scheduler walks at every
//! context switch (measured here: ~0.3 µs per event per switch, so a server followed with 25
//! probes paid ~8 µs per switch even when no probe fired). A `uprobe_multi` link with a pid has
//! no perf event: nothing is paid but the traps themselves.
//!
//! Closing such a link waits for two RCU grace periods (~40 ms here) before the kernel lets go
//! of the consumers; closes made at the same time share them. So links are closed off the
//! follower's thread, each on its own short-lived thread, by a [`LinkCloser`].
use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        mpsc::{Receiver, Sender, channel},
    },
    thread::JoinHandle,
};

use anyhow::{Context, Result, bail};

use super::discover::FileId;

/// `BPF_TRACE_UPROBE_MULTI`: the attach type the programs are loaded with and linked by.
pub const ATTACH_UPROBE_MULTI: u32 = 48;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_F_UPROBE_MULTI_RETURN`: the program runs at the probed functions' returns.
const MULTI_RETURN: u32 = 1;
/// Links being closed at once at most (each close has its own thread while it waits).
const CLOSES_IN_FLIGHT: usize = 256;

/// One program's probes in one file, switched on for a process by one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub file: FileId,
    pub program: &'static str,
}

/// A probe site: a file offset, and the cookie the program reads with `bpf_get_attach_cookie`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    pub offset: u64,
    pub cookie: u64,
}

/// A program's probes switched on for one process; dropping it switches them off (the close
/// itself happens on the closer's thread).
pub struct Link {
    fd: Option<OwnedFd>,
    sites: usize,
    closer: Sender<OwnedFd>,
}

impl Link {
    /// The probe sites this link switched on.
    pub fn sites(&self) -> usize {
        self.sites
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take()
            && let Err(unsent) = self.closer.send(fd)
        {
            // The closer is gone (the capture is stopping): close here.
            drop(unsent.0);
        }
    }
}

/// Closes dropped links in the background, many at a time.
pub struct LinkCloser {
    sender: Option<Sender<OwnedFd>>,
    thread: Option<JoinHandle<()>>,
}

impl LinkCloser {
    pub fn start() -> Result<LinkCloser> {
        let (sender, receiver) = channel();
        let thread = std::thread::Builder::new()
            .name("observer-links".into())
            .spawn(move || close_links(receiver))
            .context("starting the thread that closes probe links")?;
        Ok(LinkCloser {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Switches `sites` of `program` (loaded for `uprobe_multi`) on in process `pid`, for the
    /// file at `path`.
    pub fn attach(
        &self,
        program: BorrowedFd<'_>,
        path: &Path,
        sites: &[Site],
        pid: u32,
        at_return: bool,
    ) -> Result<Link> {
        let fd = link_create(program, path, sites, pid, at_return)?;
        let closer = self
            .sender
            .clone()
            .context("attaching a probe while the capture stops")?;
        Ok(Link {
            fd: Some(fd),
            sites: sites.len(),
            closer,
        })
    }

    /// Waits until every link dropped so far (and every one still held, once dropped) is
    /// closed.
    pub fn finish(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LinkCloser {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Closes each link on a thread of its own as soon as it is dropped (a close waits for grace
/// periods that closes in flight share, so none waits behind another), at most
/// [`CLOSES_IN_FLIGHT`] at once; returns once every close is done and no link is left to drop.
fn close_links(receiver: Receiver<OwnedFd>) {
    let in_flight = Arc::new((Mutex::new(0usize), Condvar::new()));
    let wait_below = |limit: usize| {
        let (count, changed) = &*in_flight;
        let mut count = count.lock().unwrap_or_else(|p| p.into_inner());
        while *count >= limit {
            count = changed.wait(count).unwrap_or_else(|p| p.into_inner());
        }
        count
    };
    while let Ok(fd) = receiver.recv() {
        *wait_below(CLOSES_IN_FLIGHT) += 1;
        let done = Arc::clone(&in_flight);
        let closing = std::thread::Builder::new()
            .name("observer-unlink".into())
            .spawn(move || {
                drop(fd);
                let (count, changed) = &*done;
                *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
                changed.notify_all();
            });
        if closing.is_err() {
            // No thread to spare: the failed spawn dropped (closed) the fd here.
            *in_flight.0.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        }
    }
    drop(wait_below(1));
}

/// `union bpf_attr` as `BPF_LINK_CREATE` reads it for `BPF_TRACE_UPROBE_MULTI`.
#[repr(C)]
struct UprobeMultiLinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    /// Zero, spelled out: the kernel checks that no byte past what it reads is set.
    _padding: u32,
}

fn link_create(
    program: BorrowedFd<'_>,
    path: &Path,
    sites: &[Site],
    pid: u32,
    at_return: bool,
) -> Result<OwnedFd> {
    if sites.is_empty() {
        bail!("no probe sites to switch on");
    }
    let path_c = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("a path with a NUL byte: {}", path.display()))?;
    let offsets: Vec<u64> = sites.iter().map(|site| site.offset).collect();
    let cookies: Vec<u64> = sites.iter().map(|site| site.cookie).collect();
    let attr = UprobeMultiLinkCreate {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: 0,
        attach_type: ATTACH_UPROBE_MULTI,
        flags: 0,
        path: path_c.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        ref_ctr_offsets: 0,
        cookies: cookies.as_ptr() as u64,
        cnt: sites.len() as u32,
        multi_flags: if at_return { MULTI_RETURN } else { 0 },
        pid,
        _padding: 0,
    };
    // SAFETY: the buffers the attr points to outlive the call.
    unsafe { bpf_new_fd(BPF_LINK_CREATE, &attr) }.map_err(|error| {
        anyhow::anyhow!(
            "switching on {} probe(s) in {} for pid {pid}: {error}{}",
            sites.len(),
            path.display(),
            if error.raw_os_error() == Some(libc::EINVAL) {
                " (uprobe_multi links need Linux 6.6 or later)"
            } else {
                ""
            }
        )
    })
}

/// The `bpf` system call `command` with `attr` (a `repr(C)` prefix of `union bpf_attr` with no
/// padding byte), for a command that answers with a new file descriptor.
///
/// # Safety
/// Every pointer in `attr` must be valid for what the kernel reads or writes through it.
pub(super) unsafe fn bpf_new_fd<Attr>(
    command: libc::c_long,
    attr: &Attr,
) -> std::io::Result<OwnedFd> {
    // SAFETY: the attr lives through the call and its size is passed; its pointers are the
    // caller's to vouch for.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *const Attr,
            size_of::<Attr>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
