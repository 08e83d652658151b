//! The capture stage: loads the probes, decides which processes they follow, and turns
//! ring-buffer records into [`CaptureEvent`]s on a channel.
//!
//! Probes are switched on per process (`uprobe_links`): the host's other processes pay nothing.
//! `follow` decides which processes are worth following (what their programs can do, what
//! following them costs, whether they make LLM calls); the exec gate (`gate`) holds a new
//! program at its `execve`, and a process at the open of a TLS library, until its probes are in
//! place.
//!
//! Threads: one drains the ring buffer (short timer plus wakeups past a fill threshold), one
//! follows processes (exec holds, forks, libraries loaded late, judgements from the pipeline),
//! one hands the gate's holds to the follower.
pub mod analysis;
mod analyst;
pub mod boringssl;
mod c_library;
mod catch_up;
mod container;
mod decode;
mod discover;
mod eh_frame;
mod elf;
pub mod feedback;
mod follow;
mod gate;
pub mod golang;
mod kernel_btf;
mod probe_sites;
mod probes;
pub mod record;
pub mod rustls;
mod sockets;
pub mod synthetic;
mod tls_functions;
mod types;
mod untrusted;
mod uprobe_links;

use std::{
    collections::HashSet,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, Sender, SyncSender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
pub use decode::Clock;
pub use follow::FollowStats;
pub use gate::{EXEC_GATE_ARG, ExecGate, GateStats, Hold, HoldKind, run_exec_gate};
pub use probes::{KernelCounters, running_as_root};
pub use types::*;

use self::{
    analysis::AnalysisCache,
    decode::{Record, decode},
    follow::{Follower, Request},
    probes::{Probes, SharedMaps},
};

/// How long the drain thread sleeps when the kernel did not wake it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(5);
/// Events waiting for the pipeline; beyond this the drain waits and the kernel counts drops.
const CHANNEL_CAPACITY: usize = 65_536;
/// The longest a program waits at its `execve` for the observer (which may be stuck or stopped).
pub const DEFAULT_EXEC_HOLD: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Follow only these processes and their descendants (none: the whole host, unless
    /// `scoped`).
    pub pids: Vec<u32>,
    /// Follow only processes added later with [`LiveCapture::spawn_followed`].
    pub scoped: bool,
    /// Where analyses of executables are kept across restarts (none: memory only).
    pub cache_dir: Option<PathBuf>,
    /// The longest a new program is held at its `execve` (none: no exec gate).
    pub exec_hold: Option<Duration>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            pids: Vec::new(),
            scoped: false,
            cache_dir: default_cache_dir(),
            exec_hold: Some(DEFAULT_EXEC_HOLD),
        }
    }
}

/// `OBSERVER_CACHE_DIR` if set, else `/var/cache/observer` for root, else the user's cache
/// directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("OBSERVER_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if running_as_root() {
        return Some(PathBuf::from("/var/cache/observer"));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|dir| dir.join("observer"))
}

/// What the capture costs and does, for the metrics and the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureStats {
    pub kernel: KernelCounters,
    pub follow: FollowStats,
    /// None when execs are not held (no permission, or turned off).
    pub gate: Option<GateStats>,
}

/// A running capture. Dropping it detaches every probe.
pub struct LiveCapture {
    maps: Arc<Mutex<SharedMaps>>,
    stop: Arc<AtomicBool>,
    drain: Option<JoinHandle<()>>,
    follower: Option<JoinHandle<()>>,
    requests: Sender<Request>,
    /// Commands an agent's children ran before the kernel followed them, for the draining
    /// thread to send after what the ring holds (see [`catch_up`]).
    caught_up: Sender<Command>,
    follow_stats: Arc<Mutex<FollowStats>>,
    gate_stats: Arc<Mutex<Option<GateStats>>>,
}

impl LiveCapture {
    /// Loads the probes and follows what is to be followed; returns once the processes already
    /// running are followed.
    pub fn start(options: &CaptureOptions) -> Result<(LiveCapture, Receiver<CaptureEvent>)> {
        let scoped = options.scoped || !options.pids.is_empty();
        let (probes, ring, maps) = Probes::load(!scoped)?;
        let (gate, holds) = match options.exec_hold.map(ExecGate::start) {
            Some(Ok((gate, holds))) => (Some(gate), Some(holds)),
            Some(Err(error)) => {
                log::warn!("{error:#}");
                (None, None)
            }
            None => (None, None),
        };
        let maps = Arc::new(Mutex::new(maps));
        let follow_stats = Arc::new(Mutex::new(FollowStats::default()));
        let gate_stats = Arc::new(Mutex::new(None));
        let mut follower = Follower::new(
            probes,
            maps.clone(),
            Arc::new(AnalysisCache::new(options.cache_dir.clone())),
            gate,
            scoped,
            follow_stats.clone(),
            gate_stats.clone(),
        );
        follower.follow_running();
        for &pid in &options.pids {
            follower.follow_root(pid, None);
        }
        release_freed_memory();

        let stop = Arc::new(AtomicBool::new(false));
        let (events_tx, events_rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let (requests_tx, requests_rx) = mpsc::channel();
        let (caught_up_tx, caught_up_rx) = mpsc::channel();
        if let Some(holds) = holds {
            let requests = requests_tx.clone();
            std::thread::Builder::new()
                .name("capture-holds".into())
                .spawn(move || {
                    for hold in holds {
                        if requests.send(Request::Hold(hold)).is_err() {
                            return;
                        }
                    }
                })?;
        }
        let drain = {
            let stop = stop.clone();
            let requests = requests_tx.clone();
            let maps = maps.clone();
            let follow_stats = follow_stats.clone();
            std::thread::Builder::new()
                .name("capture-drain".into())
                .spawn(move || {
                    let channels = DrainChannels {
                        events: events_tx,
                        follower: requests,
                        caught_up: caught_up_rx,
                    };
                    drain_ring(ring, stop, channels, maps, follow_stats)
                })?
        };
        let follower = {
            let analysed = requests_tx.clone();
            std::thread::Builder::new()
                .name("capture-follow".into())
                .spawn(move || follower.run(requests_rx, analysed))?
        };
        let capture = LiveCapture {
            maps,
            stop,
            drain: Some(drain),
            follower: Some(follower),
            requests: requests_tx,
            caught_up: caught_up_tx,
            follow_stats,
            gate_stats,
        };
        Ok((capture, events_rx))
    }

    /// Starts `program` with its probes in place before its first instruction: the child waits,
    /// between fork and exec, until it is followed for the program it is about to run.
    pub fn spawn_followed(&self, program: &str, args: &[String]) -> Result<tokio::process::Child> {
        let mut command = tokio::process::Command::new(program);
        command.args(args);
        let executable = find_program(program);
        let (pid_reader, pid_writer) = pipe()?;
        let (go_reader, go_writer) = pipe()?;
        let (child_pid_fd, child_go_fd) = (pid_writer.as_raw_fd(), go_reader.as_raw_fd());
        // SAFETY: only async-signal-safe calls (getpid, write, read) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let pid = libc::getpid();
                libc::write(child_pid_fd, (&raw const pid).cast(), size_of::<i32>());
                let mut byte = 0u8;
                // Returns when followed, or at once if the observer is gone (end of file).
                libc::read(child_go_fd, (&raw mut byte).cast(), 1);
                Ok(())
            });
        }
        let requests = self.requests.clone();
        let handshake = std::thread::spawn(move || {
            let mut pid = 0i32;
            // SAFETY: reading into a local integer from our own pipe.
            let read = unsafe {
                libc::read(
                    pid_reader.as_raw_fd(),
                    (&raw mut pid).cast(),
                    size_of::<i32>(),
                )
            };
            if read == size_of::<i32>() as isize {
                let (done_tx, done_rx) = mpsc::sync_channel(1);
                let request = Request::FollowRoot {
                    pid: pid as u32,
                    program: executable,
                    done: done_tx,
                };
                if requests.send(request).is_ok() {
                    let _ = done_rx.recv_timeout(DEFAULT_EXEC_HOLD * 5);
                }
            }
            // Writing the byte (or closing the pipe) lets the child go on to exec.
            let byte = 1u8;
            // SAFETY: writing one byte to our own pipe.
            unsafe { libc::write(go_writer.as_raw_fd(), (&raw const byte).cast(), 1) };
        });
        let spawned = command.spawn();
        // The child has its copies; ours would keep the handshake waiting if the spawn failed.
        drop(pid_writer);
        drop(go_reader);
        let child = spawned?;
        let _ = handshake.join();
        Ok(child)
    }

    /// Tells the capture stage what the pipeline decided (see [`Feedback`]); cheap, any thread.
    pub fn feedback_handler(&self) -> impl FnMut(Feedback) + Send + 'static {
        let maps = self.maps.clone();
        let requests = self.requests.clone();
        let caught_up = self.caught_up.clone();
        move |feedback| match feedback {
            Feedback::Unfollowed(unfollowed) => match lock(&maps).skip(unfollowed) {
                Ok(()) => log::trace!("{unfollowed:?}: the probes stop copying it"),
                Err(error) => log::debug!("{error:#}"),
            },
            Feedback::LlmClient { pid, since } => {
                // Read from /proc before the maps are taken: the draining thread needs them.
                let found = catch_up::descendants(pid, since, Clock::now());
                match lock(&maps).add_agent(pid, found) {
                    Ok(commands) => {
                        if !commands.is_empty() {
                            log::debug!(
                                "process {pid}: {} commands it started before it was known as \
                                 an agent, found in /proc",
                                commands.len()
                            );
                        }
                        for command in commands {
                            let _ = caught_up.send(command);
                        }
                    }
                    Err(error) => {
                        log::debug!("{error:#}: the commands of process {pid} are not followed")
                    }
                }
                let _ = requests.send(Request::LlmClient(pid));
            }
            Feedback::Judged { pid, judgement } => {
                let _ = requests.send(Request::Judged { pid, judgement });
            }
        }
    }

    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            kernel: lock(&self.maps).counters(),
            follow: *self.follow_stats.lock().unwrap_or_else(|p| p.into_inner()),
            gate: *self.gate_stats.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Drains what the kernel still holds, closes the event channel, and detaches.
    pub fn stop(mut self) -> CaptureStats {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.drain.take() {
            let _ = handle.join();
        }
        let stats = self.stats();
        let _ = self.requests.send(Request::Stop);
        if let Some(handle) = self.follower.take() {
            let _ = handle.join();
        }
        stats
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.requests.send(Request::Stop);
    }
}

/// Where `program` resolves through PATH, as `execvp` would find it.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: fresh fds nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn lock(maps: &Mutex<SharedMaps>) -> std::sync::MutexGuard<'_, SharedMaps> {
    maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where the draining thread sends what it reads, and what it is given to send.
struct DrainChannels {
    events: SyncSender<CaptureEvent>,
    follower: Sender<Request>,
    caught_up: Receiver<Command>,
}

fn drain_ring(
    mut ring: aya::maps::RingBuf<aya::maps::MapData>,
    stop: Arc<AtomicBool>,
    channels: DrainChannels,
    maps: Arc<Mutex<SharedMaps>>,
    follow_stats: Arc<Mutex<FollowStats>>,
) {
    let DrainChannels {
        events,
        follower,
        caught_up,
    } = channels;
    let clock = Clock::now();
    let mut known_pids: HashSet<u32> = HashSet::new();
    let fd = ring.as_raw_fd();
    let mut losses = LossReport::default();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if let Some(totals) = losses.changed(&maps, &follow_stats, stopping) {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64);
            if events.send(CaptureEvent::Losses { ts, totals }).is_err() {
                return;
            }
        }
        // Commands caught up before this pass go after it: the ring then holds everything the
        // kernel sent before they were found, such as the answer that asked for them.
        let found_before: Vec<Command> = caught_up.try_iter().collect();
        while let Some(record) = ring.next() {
            let decoded = match decode(&record, clock) {
                Some(Record::Event(decoded)) => decoded,
                Some(Record::LibraryMapped { pid }) => {
                    let _ = follower.send(Request::LibraryMapped(pid));
                    continue;
                }
                Some(Record::Fork { parent, child }) => {
                    let _ = follower.send(Request::Fork { parent, child });
                    continue;
                }
                Some(Record::Connect { pid }) => {
                    let _ = follower.send(Request::Connect(pid));
                    continue;
                }
                None => continue,
            };
            drop(record);
            let mut event = decoded.event;
            // Events to send before this one (a process first seen through its data) and after
            // it (the container of a program just started).
            let mut before = Vec::new();
            let mut after = None;
            match &mut event {
                CaptureEvent::Exec { pid, ts, .. } => {
                    known_pids.insert(*pid);
                    let _ = follower.send(Request::Exec(*pid));
                    after = container_event(*pid, *ts);
                }
                CaptureEvent::Command(command) => {
                    // While it lives: a short command may be gone already.
                    command.cwd = std::fs::read_link(format!("/proc/{}/cwd", command.pid))
                        .ok()
                        .map(|cwd| cwd.to_string_lossy().into_owned());
                }
                CaptureEvent::Exit { pid, .. } => {
                    known_pids.remove(pid);
                    let _ = follower.send(Request::Exit(*pid));
                }
                CaptureEvent::Data(chunk) if known_pids.insert(chunk.conn.pid) => {
                    let (pid, ts) = (chunk.conn.pid, chunk.ts);
                    before.push(process_identity(pid, ts, decoded.comm));
                    before.extend(container_event(pid, ts));
                }
                CaptureEvent::Socket { conn, fd, ts, .. }
                    if conn.conn & observer_common::PIPE_CONN_BIT != 0 =>
                {
                    match sockets::pipe_end(conn.pid, *fd) {
                        sockets::PipeEnd::Pipe { peer } => {
                            event = CaptureEvent::Pipe {
                                conn: *conn,
                                ts: *ts,
                                fd: *fd,
                                peer,
                            };
                        }
                        sockets::PipeEnd::NotAPipe => {
                            let _ = lock(&maps).skip(Unfollowed::Connection(*conn));
                            continue;
                        }
                        sockets::PipeEnd::Unknown => continue,
                    }
                }
                CaptureEvent::Socket {
                    conn,
                    fd,
                    peer,
                    local,
                    role,
                    ..
                } => {
                    if let Some((local_address, peer_address)) =
                        sockets::tcp_addresses(conn.pid, *fd)
                    {
                        *local = Some(local_address);
                        peer.get_or_insert(peer_address);
                    } else if conn.conn & observer_common::PLAINTEXT_CONN_BIT != 0
                        && *role != SocketRole::Connected
                        && sockets::is_not_a_socket(conn.pid, *fd)
                    {
                        // Written "GET …" to a file or a pipe: not a connection to follow.
                        let _ = lock(&maps).skip(Unfollowed::Connection(*conn));
                        continue;
                    }
                }
                _ => {}
            }
            for event in before.into_iter().chain([event]).chain(after) {
                if events.send(event).is_err() {
                    return;
                }
            }
        }
        for command in found_before {
            if events.send(CaptureEvent::Command(command)).is_err() {
                return;
            }
        }
        if stopping {
            return;
        }
        wait_readable(fd, DRAIN_INTERVAL);
    }
}

/// The capture's losses, sent to the pipeline when they change (looked at once a second, and
/// when the capture stops).
#[derive(Default)]
struct LossReport {
    sent: CaptureLosses,
    looked: Option<Instant>,
}

impl LossReport {
    fn changed(
        &mut self,
        maps: &Mutex<SharedMaps>,
        follow_stats: &Mutex<FollowStats>,
        stopping: bool,
    ) -> Option<CaptureLosses> {
        if !stopping
            && self
                .looked
                .is_some_and(|at| at.elapsed() < LOSS_REPORT_INTERVAL)
        {
            return None;
        }
        self.looked = Some(Instant::now());
        let kernel = lock(maps).counters();
        let totals = CaptureLosses {
            events_lost: kernel.events_lost,
            bytes_lost: kernel.bytes_lost,
            calls_truncated: kernel.calls_truncated,
            read_faults: kernel.read_faults,
            attached_late: follow_stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .attached_late,
        };
        (totals != self.sent).then(|| {
            self.sent = totals;
            totals
        })
    }
}

const LOSS_REPORT_INTERVAL: Duration = Duration::from_secs(1);

fn container_event(pid: u32, ts: u64) -> Option<CaptureEvent> {
    container::container_id(pid).map(|id| CaptureEvent::Container { pid, ts, id })
}

/// A process first seen through its data (it started before the observer): what is it running?
fn process_identity(pid: u32, ts: u64, comm: Option<String>) -> CaptureEvent {
    let path = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    CaptureEvent::Exec {
        pid,
        ts,
        path,
        comm: comm.unwrap_or_default(),
    }
}

/// Hands the heap's free pages back to the system. Reading the symbol tables of a host's large
/// libraries (tens of MB for some) leaves that much freed but still resident otherwise.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

fn wait_readable(fd: i32, timeout: Duration) {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
}
