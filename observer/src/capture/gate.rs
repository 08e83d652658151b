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

/// A filesystem seen in a mount namespace, and a path that reaches it from here.
struct Mount {
    device: Device,
    fstype: OsString,
    path: PathBuf,
}

/// The filesystems to mark, in our mount namespace and in every other one a process is in
/// (containers), reached through that process's root.
fn mounted_filesystems() -> Vec<Mount> {
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

struct MountinfoEntry {
    device: Device,
    mount_point: OsString,
    fstype: OsString,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// the device is the third field, the mount point the fifth, the type the first after `-`.
fn parse_mountinfo_line(line: &[u8]) -> Option<MountinfoEntry> {
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
fn unescape_octal(field: &[u8]) -> Vec<u8> {
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

// The gate process.

/// The gate's `main`: called by the observer's `main` when its first argument is
/// [`EXEC_GATE_ARG`], before anything else starts.
pub fn run_exec_gate() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let Some((fanotify, socket, bound)) = gate_arguments(&args) else {
        eprintln!(
            "observer: `{EXEC_GATE_ARG}` is the exec gate the observer starts for itself \
             (arguments: FANOTIFY_FD SOCKET_FD BOUND_MICROSECONDS)"
        );
        return ExitCode::from(2);
    };
    close_other_descriptors([fanotify.as_raw_fd(), socket.as_raw_fd()]);
    if let Err(errno) = nix::sys::prctl::set_name(c"observer-gate") {
        eprintln!("observer-gate: naming the process: {errno}");
    }
    // The observer ends the gate explicitly, and its death ends it too: the socket closes.
    // (Not PR_SET_PDEATHSIG, which fires when the thread that started the gate exits.)
    for ignored in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN runs no handler code.
        if let Err(errno) = unsafe { signal(ignored, SigHandler::SigIgn) } {
            eprintln!("observer-gate: ignoring {ignored}: {errno}");
        }
    }
    // The kernel denies an event whose descriptor it cannot open for the gate: leave room.
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    Gate {
        fanotify,
        observer: socket,
        bound,
        answered_at_once: [getpid().as_raw(), getppid().as_raw()],
        pending: Vec::with_capacity(MAX_PENDING),
        next_id: 0,
        observer_answering: true,
        answered_alone: 0,
    }
    .run();
    ExitCode::SUCCESS
}

fn gate_arguments(args: &[OsString]) -> Option<(Fanotify, OwnedFd, Duration)> {
    let [fanotify, socket, bound] = args else {
        return None;
    };
    let number = |arg: &OsStr| arg.to_str()?.parse::<u64>().ok();
    let bound = Duration::from_micros(number(bound)?);
    let [fanotify, socket] = [fanotify, socket].map(|fd| {
        number(fd)
            .and_then(|fd| RawFd::try_from(fd).ok())
            // Standard streams are never ours, and the descriptor must be open.
            // SAFETY: F_GETFD only reads the descriptor's flags.
            .filter(|&fd| fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
    });
    let (fanotify, socket) = (fanotify?, socket?);
    if fanotify == socket {
        return None;
    }
    // SAFETY: the observer passed these two open descriptors for the gate alone.
    unsafe {
        Some((
            Fanotify::from_raw_fd(fanotify),
            OwnedFd::from_raw_fd(socket),
            bound,
        ))
    }
}

/// Descriptors the observer had inherited without close-on-exec reached the gate too: close
/// them, so that the gate keeps no one's pipe or file open.
fn close_other_descriptors(kept: [RawFd; 2]) {
    let [low, high] = if kept[0] < kept[1] {
        kept
    } else {
        [kept[1], kept[0]]
    };
    for (first, last) in [(3, low - 1), (low + 1, high - 1), (high + 1, RawFd::MAX)] {
        if first <= last {
            // SAFETY: the gate has opened nothing yet; these are strays from the observer.
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    first as libc::c_uint,
                    last as libc::c_uint,
                    0,
                )
            };
        }
    }
}

struct Pending {
    id: u64,
    event: FanotifyEvent,
    deadline: Instant,
}

struct Gate {
    fanotify: Fanotify,
    observer: OwnedFd,
    bound: Duration,
    /// The gate's own pid and the observer's: never held (the observer reading a held file
    /// must not wait for itself).
    answered_at_once: [i32; 2],
    pending: Vec<Pending>,
    next_id: u64,
    /// False once an event waited out the bound, until the observer sends anything again.
    observer_answering: bool,
    /// Events answered without the observer's reply, sent with each message (a count, so that
    /// a lost message loses nothing).
    answered_alone: u64,
}

impl Gate {
    fn run(mut self) {
        loop {
            let (events_ready, observer_ready) = match self.wait() {
                Ok(ready) => ready,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    eprintln!("observer-gate: poll: {errno}");
                    break;
                }
            };
            if observer_ready && !self.read_observer() {
                break;
            }
            if events_ready {
                self.read_events();
            }
            self.answer_expired();
        }
        // The observer is gone: let everything go. Events not read yet are let go by the
        // kernel when the last fanotify descriptor closes, on exit.
        for pending in std::mem::take(&mut self.pending) {
            self.allow(&pending.event);
        }
    }

    /// Waits for an event, a message or the next deadline.
    fn wait(&self) -> nix::Result<(bool, bool)> {
        let timeout = match self.pending.iter().map(|pending| pending.deadline).min() {
            // Rounded up, so that a deadline less than a millisecond away is not a busy loop.
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(self.fanotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.observer.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut fds, timeout)?;
        let ready = |fd: &PollFd| fd.revents().is_some_and(|revents| !revents.is_empty());
        Ok((ready(&fds[0]), ready(&fds[1])))
    }

    /// Handles what the observer sent; false when it is gone.
    fn read_observer(&mut self) -> bool {
        let mut buffer = [0u8; Request::SIZE];
        loop {
            let (len, fd) = match receive(&self.observer, &mut buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(Some(received)) => received,
                Ok(None) => return false,
                Err(Errno::EAGAIN) => return true,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            };
            self.observer_answering = true;
            match Request::decode(&buffer[..len]) {
                Some(Request::Release(id)) => {
                    if let Some(index) = self.pending.iter().position(|pending| pending.id == id) {
                        let pending = self.pending.swap_remove(index);
                        self.allow(&pending.event);
                    }
                }
                Some(Request::Mark(target, request)) => {
                    let marked = match &fd {
                        Some(fd) => self.mark(target, fd.as_fd()),
                        None => Err(Errno::EBADF),
                    };
                    let reply = GateMessage {
                        body: GateBody::Marked(MarkReply {
                            request,
                            errno: marked.err().map_or(0, |errno| errno as i32),
                        }),
                        answered_alone: self.answered_alone,
                    };
                    let _ = send(&self.observer, &reply.encode(), None);
                }
                None => {}
            }
        }
    }

    /// Marks the file or filesystem of `fd`.
    fn mark(&self, target: MarkTarget, fd: BorrowedFd) -> nix::Result<()> {
        let (flags, mask) = match target {
            MarkTarget::Filesystem => (
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
                MaskFlags::FAN_OPEN_EXEC_PERM,
            ),
            MarkTarget::File => (
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_INODE,
                MaskFlags::FAN_OPEN_PERM,
            ),
        };
        self.fanotify.mark(flags, mask, fd, None::<&str>)
    }

    /// One read's worth of events (at most 4 KiB of them), so the observer's messages are not
    /// starved by a burst of execs.
    fn read_events(&mut self) {
        let events = match self.fanotify.read_events() {
            Ok(events) => events,
            Err(Errno::EAGAIN | Errno::EINTR) => return,
            Err(errno) => {
                eprintln!("observer-gate: reading fanotify events: {errno}");
                return;
            }
        };
        for event in events {
            self.on_event(event);
        }
    }

    fn on_event(&mut self, event: FanotifyEvent) {
        // No descriptor: a queue overflow, which an unlimited queue does not have.
        if event.fd().is_none() {
            return;
        }
        let mask = event.mask();
        let kind = if mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
            HoldKind::Exec
        } else if mask.contains(MaskFlags::FAN_OPEN_PERM) {
            HoldKind::Open
        } else {
            return; // not a permission event: nothing waits for an answer
        };
        if self.answered_at_once.contains(&event.pid()) {
            self.allow(&event);
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let hold = GateBody::Hold {
            id,
            pid: event.pid() as u32,
            kind,
        };
        let waiting = self.observer_answering && self.pending.len() < MAX_PENDING;
        if waiting {
            let message = GateMessage {
                body: hold,
                answered_alone: self.answered_alone,
            };
            if send(&self.observer, &message.encode(), event.fd()).is_ok() {
                self.pending.push(Pending {
                    id,
                    event,
                    deadline: Instant::now() + self.bound,
                });
                return;
            }
        }
        // The observer is unresponsive, swamped, or its socket full: do not wait for it.
        self.allow(&event);
        self.answered_alone += 1;
        if !waiting {
            // Still told, for what it may learn from the file when it wakes.
            let message = GateMessage {
                body: hold,
                answered_alone: self.answered_alone,
            };
            let _ = send(&self.observer, &message.encode(), event.fd());
        }
    }

    fn answer_expired(&mut self) {
        let now = Instant::now();
        let before = self.pending.len();
        let mut index = 0;
        while index < self.pending.len() {
            if self.pending[index].deadline <= now {
                let pending = self.pending.swap_remove(index);
                self.allow(&pending.event);
                self.answered_alone += 1;
            } else {
                index += 1;
            }
        }
        if self.pending.len() < before {
            self.observer_answering = false;
            let message = GateMessage {
                body: GateBody::Counters,
                answered_alone: self.answered_alone,
            };
            let _ = send(&self.observer, &message.encode(), None);
        }
    }

    fn allow(&self, event: &FanotifyEvent) {
        let Some(fd) = event.fd() else {
            return;
        };
        if let Err(errno) = self
            .fanotify
            .write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW))
        {
            eprintln!(
                "observer-gate: answering pid {}: {errno} (it waits until the gate exits)",
                event.pid()
            );
        }
    }
}

// The messages: fixed-size little-endian records, one per packet, with at most one descriptor.

/// Sends one packet without blocking (a full socket means a peer that is not reading).
fn send(socket: &OwnedFd, bytes: &[u8], fd: Option<BorrowedFd>) -> nix::Result<()> {
    let fds = fd.map(|fd| [fd.as_raw_fd()]);
    let rights: Vec<ControlMessage> = fds
        .iter()
        .map(|fds| ControlMessage::ScmRights(fds))
        .collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &rights,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(|_| ())
}

/// Receives one packet and the descriptor it carries; `None` at the end of the stream.
fn receive(
    socket: &OwnedFd,
    buffer: &mut [u8],
    flags: MsgFlags,
) -> nix::Result<Option<(usize, Option<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if message.bytes == 0 {
        return Ok(None);
    }
    let mut received = Vec::new();
    // A truncated control message (ENOBUFS here) carries no descriptor we could use.
    for control in message.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(fds) = control {
            // SAFETY: descriptors the kernel just installed for this process.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    // One at most is expected; any other is closed here.
    Ok(Some((message.bytes, received.into_iter().next())))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MarkTarget {
    /// The filesystem of the descriptor: every exec on it.
    Filesystem,
    /// The descriptor's file: every open of it.
    File,
}

/// Observer → gate.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Release(u64),
    /// A mark request, carrying the file or a directory of the filesystem, and its number.
    Mark(MarkTarget, u64),
}

impl Request {
    const SIZE: usize = 12;

    fn encode(&self) -> [u8; Self::SIZE] {
        let (tag, id) = match *self {
            Request::Release(id) => (1u32, id),
            Request::Mark(MarkTarget::Filesystem, request) => (2, request),
            Request::Mark(MarkTarget::File, request) => (3, request),
        };
        let mut bytes = [0; Self::SIZE];
        bytes[..4].copy_from_slice(&tag.to_le_bytes());
        bytes[4..].copy_from_slice(&id.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Request> {
        let bytes: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        let id = u64::from_le_bytes(bytes[4..].try_into().ok()?);
        match u32::from_le_bytes(bytes[..4].try_into().ok()?) {
            1 => Some(Request::Release(id)),
            2 => Some(Request::Mark(MarkTarget::Filesystem, id)),
            3 => Some(Request::Mark(MarkTarget::File, id)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MarkReply {
    request: u64,
    /// 0 when marked.
    errno: i32,
}

/// Gate → observer.
#[derive(Debug, PartialEq, Eq)]
struct GateMessage {
    body: GateBody,
    answered_alone: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GateBody {
    /// An event, with its file attached.
    Hold {
        id: u64,
        pid: u32,
        kind: HoldKind,
    },
    Marked(MarkReply),
    /// Only the count of events answered alone changed.
    Counters,
}

impl GateMessage {
    /// tag u32, pid or errno u32, id u64, events answered alone u64.
    const SIZE: usize = 24;

    fn encode(&self) -> [u8; Self::SIZE] {
        let (tag, value, id) = match self.body {
            GateBody::Hold {
                id,
                pid,
                kind: HoldKind::Exec,
            } => (1u32, pid, id),
            GateBody::Hold {
                id,
                pid,
                kind: HoldKind::Open,
            } => (2, pid, id),
            GateBody::Marked(reply) => (3, reply.errno as u32, reply.request),
            GateBody::Counters => (4, 0, 0),
        };
        let mut bytes = [0; Self::SIZE];
        bytes[..4].copy_from_slice(&tag.to_le_bytes());
        bytes[4..8].copy_from_slice(&value.to_le_bytes());
        bytes[8..16].copy_from_slice(&id.to_le_bytes());
        bytes[16..].copy_from_slice(&self.answered_alone.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<GateMessage> {
        let bytes: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes[at..at + 4].try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes[at..at + 8].try_into().ok()?));
        let (value, id) = (u32_at(4)?, u64_at(8)?);
        let body = match u32_at(0)? {
            1 => GateBody::Hold {
                id,
                pid: value,
                kind: HoldKind::Exec,
            },
            2 => GateBody::Hold {
                id,
                pid: value,
                kind: HoldKind::Open,
            },
            3 => GateBody::Marked(MarkReply {
                request: id,
                errno: value as i32,
            }),
            4 => GateBody::Counters,
            _ => return None,
        };
        Some(GateMessage {
            body,
            answered_alone: u64_at(16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_mount_point_and_type() {
        let line =
            b"36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext4 /dev/root rw";
        let entry = parse_mountinfo_line(line).expect("a well-formed line");
        assert_eq!(entry.device, (98, 0));
        assert_eq!(entry.mount_point, "/mnt two");
        assert_eq!(entry.fstype, "ext4");

        let no_optional_fields = b"22 27 0:21 / /proc rw,relatime - proc proc rw";
        let entry = parse_mountinfo_line(no_optional_fields).expect("a well-formed line");
        assert_eq!(
            (entry.device, entry.fstype.as_os_str()),
            ((0, 21), OsStr::new("proc"))
        );

        assert!(parse_mountinfo_line(b"").is_none());
        assert!(parse_mountinfo_line(b"1 2 x:y / / rw - ext4 a rw").is_none());
    }

    #[test]
    fn octal_escapes_are_undone_and_the_rest_kept() {
        assert_eq!(unescape_octal(b"a\\011b\\134c\\012"), b"a\tb\\c\n");
        assert_eq!(unescape_octal(b"\\09x\\"), b"\\09x\\");
    }

    #[test]
    fn messages_survive_their_encoding() {
        for body in [
            GateBody::Hold {
                id: 1 << 40,
                pid: 4_000_000,
                kind: HoldKind::Exec,
            },
            GateBody::Hold {
                id: 3,
                pid: 1,
                kind: HoldKind::Open,
            },
            GateBody::Marked(MarkReply {
                request: 9,
                errno: libc::EXDEV,
            }),
            GateBody::Counters,
        ] {
            let message = GateMessage {
                body,
                answered_alone: u64::MAX - 1,
            };
            assert_eq!(GateMessage::decode(&message.encode()), Some(message));
        }
        for request in [
            Request::Release(u64::MAX),
            Request::Mark(MarkTarget::Filesystem, 2),
            Request::Mark(MarkTarget::File, 3),
        ] {
            assert_eq!(Request::decode(&request.encode()), Some(request));
        }
        assert_eq!(GateMessage::decode(&[1; GateMessage::SIZE - 1]), None);
        assert_eq!(Request::decode(&[9; Request::SIZE]), None);
    }
}
