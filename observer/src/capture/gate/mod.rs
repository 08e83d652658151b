//! The exec gate: holds each new program at its `execve` (and each open of chosen files, such as
//! a TLS library) until the observer has looked at it, so that probes can be in place before the
//! program's first instruction — and never longer than a fixed bound.
//!
//! fanotify permission events do the holding: the kernel waits for the group's answer before
//! the exec or open goes on. A group that stopped answering would hang every exec on the host,
//! and the observer can be stopped at any moment (SIGSTOP, a debugger), so the answering is done
//! by a small separate process, the gate: this executable re-run with [`EXEC_GATE_ARG`]. It has
//! the only copy of the fanotify descriptor, forwards each event to the observer over a socket
//! pair, and answers the kernel when the observer replies or when the bound passes, whichever
//! comes first. Once an event has waited out the bound the gate waits for nothing until the
//! observer speaks again, so a stopped observer delays execs once, by the bound, then no more.
//! When the observer dies its socket closes and the gate answers everything and exits; when the
//! gate dies the kernel lets everything go. The gate never denies.
mod mounts;
mod process;
#[cfg(test)]
mod tests;
mod wire;

use std::{
    collections::HashSet,
    ffi::{OsStr, OsString},
    fs::File,
    io::{IoSlice, IoSliceMut},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStringExt, fs::OpenOptionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        fanotify::{
            EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags,
            MaskFlags, Response,
        },
        resource::{Resource, getrlimit, setrlimit},
        signal::{SigHandler, Signal, signal},
        socket::{
            AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
            recvmsg, sendmsg, socketpair,
        },
    },
    unistd::{getpid, getppid},
};

pub use self::process::run_exec_gate;
use self::{mounts::*, wire::*};

/// The first argument that makes this executable the gate (see [`run_exec_gate`]).
pub const EXEC_GATE_ARG: &str = "__exec-gate";

/// Holds waiting for the observer's consumer; past this the reader lets new ones go at once.
const HOLD_QUEUE: usize = 256;
/// Events the gate holds at once; past this it answers new ones at once. With one read's worth
/// of events (a 4 KiB read, at most 170) this keeps the gate's descriptors well under 1024: the
/// kernel denies an event whose descriptor it cannot open.
const MAX_PENDING: usize = 256;
/// How long `hold_opens_of` and `mark_new_filesystems` wait for the gate to mark a file.
const MARK_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Filesystems with no programs to execute: pseudo filesystems (most refuse permission marks
/// anyway) and `/dev`'s devtmpfs. A permission mark on a filesystem puts every later read and
/// write of its files through fsnotify (~8 ns each, measured: 5 % of `dd bs=64` from /dev/zero
/// to /dev/null), so none is placed where no program lives.
const UNMARKED_FILESYSTEMS: &[&str] = &[
    "devtmpfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "tracefs",
    "debugfs",
    "bpf",
    "securityfs",
    "pstore",
    "configfs",
    "fusectl",
    "autofs",
    "binfmt_misc",
    "hugetlbfs",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "selinuxfs",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// The process is executing the file (the program, or its ELF interpreter).
    Exec,
    /// The process is opening a file marked with [`ExecGate::hold_opens_of`].
    Open,
}

/// A process the kernel holds until [`ExecGate::release`], or until the gate's bound passes.
#[derive(Debug)]
pub struct Hold {
    /// The process that executes or opens the file.
    pub pid: u32,
    pub kind: HoldKind,
    /// The file being executed or opened (its path: the target of `/proc/self/fd/N`).
    pub file: File,
    id: u64,
    received: Instant,
}

/// What the gate has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Holds the observer received.
    pub holds: u64,
    /// Holds let go unseen because the consumer had 256 waiting already (or had gone).
    pub holds_dropped: u64,
    /// Holds the observer released (some perhaps after the gate had let them go).
    pub released_by_observer: u64,
    /// Events the gate answered without it: at the bound, while the observer was unresponsive,
    /// or when it could not forward them.
    pub released_by_gate: u64,
    /// Time from a hold's arrival in the observer to its [`ExecGate::release`].
    pub total_hold_time: Duration,
    pub max_hold_time: Duration,
    pub filesystems_marked: u64,
    pub files_marked: u64,
}

/// The observer's side of the gate. Dropping it kills the gate process, which lets every held
/// process go.
pub struct ExecGate {
    gate: Child,
    socket: Arc<OwnedFd>,
    shared: Arc<Shared>,
    marking: Mutex<Marking>,
    reader: Option<JoinHandle<()>>,
}

/// Written by the reader thread and by `release`, read by `stats`.
#[derive(Default)]
struct Shared {
    holds: AtomicU64,
    holds_dropped: AtomicU64,
    released_by_observer: AtomicU64,
    released_by_gate: AtomicU64,
    hold_nanos_total: AtomicU64,
    hold_nanos_max: AtomicU64,
    filesystems_marked: AtomicU64,
    files_marked: AtomicU64,
    stopping: AtomicBool,
}

/// Mark requests go one at a time: each waits for its reply.
struct Marking {
    replies: Receiver<MarkReply>,
    next_request: u64,
    /// Filesystems (by device) already marked, or refused by the kernel, among those mounted.
    filesystems: HashSet<Device>,
}

/// A superblock's device number, as mountinfo writes it (major, minor).
type Device = (u32, u32);

impl ExecGate {
    /// Marks the local filesystems for exec holds and starts the gate process. `bound` is the
    /// longest a process is held without the observer's release.
    pub fn start(bound: Duration) -> Result<(ExecGate, Receiver<Hold>)> {
        let program =
            std::env::current_exe().context("finding this executable to start the exec gate")?;
        Self::start_with(&program, bound)
    }

    /// [`ExecGate::start`] with the gate run from `program`: an executable whose `main` hands
    /// [`EXEC_GATE_ARG`] to [`run_exec_gate`] (the observer itself; tests name it).
    pub fn start_with(program: &Path, bound: Duration) -> Result<(ExecGate, Receiver<Hold>)> {
        let fanotify = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_UNLIMITED_QUEUE
                | InitFlags::FAN_UNLIMITED_MARKS,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|errno| match errno {
            Errno::EPERM => anyhow!(
                "exec holds are off: programs started later may lose their first calls; \
                 run as root (CAP_SYS_ADMIN) for them"
            ),
            other => anyhow!(
                "exec holds are off ({other} from fanotify_init): programs started later may \
                 lose their first calls"
            ),
        })?;
        let (socket, gate_socket) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("creating the exec gate's socket pair")?;
        // Nothing is marked yet, so the gate's own exec is not held.
        let gate = spawn_gate(program, &fanotify, &gate_socket, bound)?;
        // The gate must hold the only copies: were the observer to keep the fanotify descriptor,
        // a dead gate would leave every held process waiting.
        drop(fanotify);
        drop(gate_socket);

        let socket = Arc::new(socket);
        let shared = Arc::new(Shared::default());
        let (holds_tx, holds_rx) = mpsc::sync_channel(HOLD_QUEUE);
        let (replies_tx, replies_rx) = mpsc::channel();
        let reader = {
            let (socket, shared) = (socket.clone(), shared.clone());
            std::thread::Builder::new()
                .name("exec-gate-reader".into())
                .spawn(move || read_gate(&socket, &shared, &holds_tx, &replies_tx))?
        };
        let gate = ExecGate {
            gate,
            socket,
            shared,
            marking: Mutex::new(Marking {
                replies: replies_rx,
                next_request: 0,
                filesystems: HashSet::new(),
            }),
            reader: Some(reader),
        };
        gate.mark_new_filesystems();
        if gate.stats().filesystems_marked == 0 {
            bail!(
                "exec holds are off: no filesystem could be marked (see the debug log); \
                 programs started later may lose their first calls"
            );
        }
        Ok((gate, holds_rx))
    }

    /// Lets the held process go on. Taking the hold closes its file.
    pub fn release(&self, hold: Hold) {
        let held = hold.received.elapsed().as_nanos() as u64;
        self.shared
            .released_by_observer
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .hold_nanos_total
            .fetch_add(held, Ordering::Relaxed);
        self.shared
            .hold_nanos_max
            .fetch_max(held, Ordering::Relaxed);
        // A release that cannot be sent is answered by the gate at the bound.
        if let Err(errno) = send(&self.socket, &Request::Release(hold.id).encode(), None) {
            log::debug!("releasing pid {}: {errno}", hold.pid);
        }
    }

    /// Holds every later open of this file (by inode, whatever the path), by any process.
    pub fn hold_opens_of(&self, file: &File) -> Result<()> {
        let mut marking = lock(&self.marking);
        self.mark(&mut marking, MarkTarget::File, file.as_fd())
            .context("holding the opens of a file")?;
        self.shared.files_marked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Marks the filesystems mounted since the last call, in every mount namespace (call it
    /// periodically). A filesystem that cannot be marked is logged at debug and skipped.
    pub fn mark_new_filesystems(&self) {
        let mut marking = lock(&self.marking);
        let mounts = mounted_filesystems();
        // A filesystem unmounted since may see its device number reused by a new one.
        let mounted: HashSet<Device> = mounts.iter().map(|mount| mount.device).collect();
        marking
            .filesystems
            .retain(|device| mounted.contains(device));
        for mount in mounts {
            if marking.filesystems.contains(&mount.device) {
                continue;
            }
            // Non-blocking and directories only: a mount point can be a bind-mounted FIFO or
            // device, whose open would block or act.
            let directory = match File::options()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
                .open(&mount.path)
            {
                Ok(directory) => directory,
                Err(error) => {
                    // Another mount of the same filesystem may do.
                    log::debug!("exec holds: opening {}: {error}", mount.path.display());
                    continue;
                }
            };
            // The kernel's answer is the filesystem's, whatever mount it was asked through.
            marking.filesystems.insert(mount.device);
            match self.mark(&mut marking, MarkTarget::Filesystem, directory.as_fd()) {
                Ok(()) => {
                    self.shared
                        .filesystems_marked
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => log::debug!(
                    "exec holds: not marking {} ({}): {error:#}",
                    mount.path.display(),
                    mount.fstype.to_string_lossy()
                ),
            }
        }
    }

    pub fn stats(&self) -> GateStats {
        let shared = &self.shared;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        GateStats {
            holds: load(&shared.holds),
            holds_dropped: load(&shared.holds_dropped),
            released_by_observer: load(&shared.released_by_observer),
            released_by_gate: load(&shared.released_by_gate),
            total_hold_time: Duration::from_nanos(load(&shared.hold_nanos_total)),
            max_hold_time: Duration::from_nanos(load(&shared.hold_nanos_max)),
            filesystems_marked: load(&shared.filesystems_marked),
            files_marked: load(&shared.files_marked),
        }
    }

    /// The gate process's pid.
    pub fn gate_pid(&self) -> u32 {
        self.gate.id()
    }

    /// Asks the gate to mark `fd`'s file or filesystem and waits for its answer.
    fn mark(&self, marking: &mut Marking, target: MarkTarget, fd: BorrowedFd) -> Result<()> {
        marking.next_request += 1;
        let request = marking.next_request;
        send(
            &self.socket,
            &Request::Mark(target, request).encode(),
            Some(fd),
        )
        .map_err(|errno| anyhow!("sending to the exec gate process: {errno}"))?;
        let deadline = Instant::now() + MARK_REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match marking.replies.recv_timeout(left) {
                Ok(reply) if reply.request != request => continue, // one given up on earlier
                Ok(reply) if reply.errno == 0 => return Ok(()),
                Ok(reply) => return Err(Errno::from_raw(reply.errno).into()),
                Err(RecvTimeoutError::Timeout) => bail!("the exec gate did not answer in time"),
                Err(RecvTimeoutError::Disconnected) => bail!("the exec gate process is gone"),
            }
        }
    }
}

impl Drop for ExecGate {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.gate.kill();
        let _ = self.gate.wait();
        // The gate's end of the socket closed with it: the reader sees the end and returns.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn_gate(
    program: &Path,
    fanotify: &Fanotify,
    socket: &OwnedFd,
    bound: Duration,
) -> Result<Child> {
    let inherited = [fanotify.as_raw_fd(), socket.as_raw_fd()];
    let mut command = Command::new(program);
    command
        .arg(EXEC_GATE_ARG)
        .args(inherited.map(|fd| fd.to_string()))
        .arg(bound.as_micros().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: between fork and exec, only async-signal-safe calls (setsid, fcntl) on
    // descriptors this process owns.
    unsafe {
        command.pre_exec(move || {
            // Its own session and process group: a signal to the observer's group (Ctrl-C, a
            // stop from the terminal) does not reach the gate.
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // These two, and only these, survive the exec.
            for fd in inherited {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    command
        .spawn()
        .with_context(|| format!("starting the exec gate ({})", program.display()))
}

/// The observer's reader thread: holds to the channel, mark replies to the waiting request.
fn read_gate(
    socket: &OwnedFd,
    shared: &Shared,
    holds: &SyncSender<Hold>,
    replies: &Sender<MarkReply>,
) {
    let mut buffer = [0u8; GateMessage::SIZE];
    loop {
        let (message, fd) = match receive(socket, &mut buffer, MsgFlags::empty()) {
            Ok(Some((len, fd))) => (GateMessage::decode(&buffer[..len]), fd),
            Ok(None) => break,
            Err(errno) => {
                log::debug!("exec gate socket: {errno}");
                break;
            }
        };
        let Some(message) = message else {
            log::debug!("exec gate: a message of unknown form");
            continue;
        };
        shared
            .released_by_gate
            .store(message.answered_alone, Ordering::Relaxed);
        match message.body {
            GateBody::Hold { id, pid, kind } => {
                shared.holds.fetch_add(1, Ordering::Relaxed);
                // Without the file (the observer out of descriptors) the hold is of no use.
                let Some(fd) = fd else {
                    let _ = send(socket, &Request::Release(id).encode(), None);
                    continue;
                };
                let hold = Hold {
                    pid,
                    kind,
                    file: File::from(fd),
                    id,
                    received: Instant::now(),
                };
                match holds.try_send(hold) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        shared.holds_dropped.fetch_add(1, Ordering::Relaxed);
                        let _ = send(socket, &Request::Release(id).encode(), None);
                    }
                }
            }
            GateBody::Marked(reply) => {
                let _ = replies.send(reply);
            }
            GateBody::Counters => {}
        }
    }
    if !shared.stopping.load(Ordering::SeqCst) {
        log::warn!(
            "the exec gate process exited: exec holds are off; programs started from now on \
             may lose their first calls"
        );
    }
}
