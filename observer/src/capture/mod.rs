//! The capture stage: loads the probes, finds the TLS libraries of the host's processes,
//! and turns ring-buffer records into [`CaptureEvent`]s on a channel.
//!
//! Two threads: one drains the ring buffer (short timer plus wakeups past a fill threshold),
//! one discovers and attaches to new TLS libraries (at exec, when a process maps a file
//! executable, and by periodic rescans).
mod boringssl;
mod container;
mod decode;
mod discover;
mod elf;
mod gate;
mod golang;
mod probe_sites;
mod probes;
pub mod record;
mod sockets;
mod types;

use std::{
    collections::HashSet,
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;
pub use decode::Clock;
pub use gate::{EXEC_GATE_ARG, ExecGate, GateStats, Hold, HoldKind, run_exec_gate};
pub use probes::{KernelCounters, running_as_root};
pub use types::*;

use self::{
    decode::{Record, decode},
    discover::{FileId, all_pids, executable_mappings, system_tls_libraries},
    probes::{Probes, SharedMaps},
};

/// How long the drain thread sleeps when the kernel did not wake it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(5);
/// Full rescan of every process's mappings, for libraries loaded late (dlopen).
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// After an exec, the new program's libraries appear over its first moments: look again then.
const RESCANS_AFTER_EXEC: &[Duration] = &[
    Duration::from_millis(20),
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
/// Events waiting for the pipeline; beyond this the drain waits and the kernel counts drops.
const CHANNEL_CAPACITY: usize = 65_536;

#[derive(Clone, Debug, Default)]
pub struct CaptureOptions {
    /// Trace only these processes and their descendants (none: the whole host).
    pub pids: Vec<u32>,
    /// Trace only processes added later with [`LiveCapture::watch_pid`].
    pub filter_pids: bool,
    /// Programs about to be started: attached before they run, since a short-lived program
    /// may finish its first TLS call before an exec-time scan completes.
    pub programs: Vec<std::path::PathBuf>,
}

/// A running capture. Dropping it detaches every probe.
pub struct LiveCapture {
    maps: Arc<Mutex<SharedMaps>>,
    stop: Arc<AtomicBool>,
    drain: Option<JoinHandle<()>>,
    discovery: Option<JoinHandle<()>>,
    attached_files: usize,
}

impl LiveCapture {
    /// Loads and attaches everything; returns once the host's current TLS libraries are probed.
    pub fn start(options: &CaptureOptions) -> Result<(LiveCapture, Receiver<CaptureEvent>)> {
        let filter = options.filter_pids || !options.pids.is_empty();
        let (mut probes, ring, mut maps) = Probes::load(filter)?;
        for &pid in &options.pids {
            maps.watch_pid(pid)?;
        }
        for path in system_tls_libraries()
            .into_iter()
            .chain(options.programs.iter().cloned())
        {
            if let Some(id) = FileId::of(&path) {
                attach_logged(&mut probes, id, &path);
            }
        }
        let scan_pids = if options.pids.is_empty() {
            all_pids()
        } else {
            options.pids.clone()
        };
        for pid in scan_pids {
            scan_process(&mut probes, pid);
        }
        release_freed_memory();
        let attached_files = probes.attached_files();

        let maps = Arc::new(Mutex::new(maps));
        let stop = Arc::new(AtomicBool::new(false));
        let (events_tx, events_rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let (discovery_tx, discovery_rx) = mpsc::channel();
        let drain = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("capture-drain".into())
                .spawn(move || drain_ring(ring, stop, events_tx, discovery_tx))?
        };
        let discovery = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("capture-discovery".into())
                .spawn(move || discover_loop(probes, stop, discovery_rx))?
        };
        let capture = LiveCapture {
            maps,
            stop,
            drain: Some(drain),
            discovery: Some(discovery),
            attached_files,
        };
        Ok((capture, events_rx))
    }

    /// TLS library files attached at start.
    pub fn attached_files(&self) -> usize {
        self.attached_files
    }

    /// Adds a process (and its future children) to the traced set.
    pub fn watch_pid(&self, pid: u32) -> Result<()> {
        lock(&self.maps).watch_pid(pid)
    }

    pub fn unwatch_pid(&self, pid: u32) -> Result<()> {
        lock(&self.maps).unwatch_pid(pid)
    }

    /// A handle the pipeline uses to stop the probes copying connections it does not follow.
    pub fn skipper(&self) -> Skipper {
        Skipper {
            maps: self.maps.clone(),
        }
    }

    pub fn kernel_counters(&self) -> KernelCounters {
        lock(&self.maps).counters()
    }

    /// Drains what the kernel still holds, closes the event channel, and detaches.
    pub fn stop(mut self) -> KernelCounters {
        self.stop.store(true, Ordering::SeqCst);
        for handle in [self.drain.take(), self.discovery.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
        self.kernel_counters()
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// See [`LiveCapture::skipper`].
pub struct Skipper {
    maps: Arc<Mutex<SharedMaps>>,
}

impl Skipper {
    /// The probes stop copying what the pipeline no longer follows (best effort: a full map
    /// only costs the copying).
    pub fn skip(&self, unfollowed: Unfollowed) {
        match lock(&self.maps).skip(unfollowed) {
            Ok(()) => log::trace!("{unfollowed:?}: the probes stop copying it"),
            Err(error) => log::debug!("{error:#}"),
        }
    }
}

fn lock(maps: &Mutex<SharedMaps>) -> std::sync::MutexGuard<'_, SharedMaps> {
    maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn attach_logged(probes: &mut Probes, id: FileId, path: &std::path::Path) {
    if let Err(error) = probes.consider(id, path) {
        log::warn!("could not attach to {}: {error:#}", path.display());
    }
}

fn scan_process(probes: &mut Probes, pid: u32) {
    for file in executable_mappings(pid) {
        attach_logged(probes, file.id, &file.host_path);
    }
}

/// What the drain thread asks of the discovery thread.
enum Discovery {
    /// A new program: scan it now and again over its first seconds.
    Exec(u32),
    /// A library was mapped: scan once, now.
    Mapped(u32),
}

fn drain_ring(
    mut ring: aya::maps::RingBuf<aya::maps::MapData>,
    stop: Arc<AtomicBool>,
    events: SyncSender<CaptureEvent>,
    discovery: Sender<Discovery>,
) {
    let clock = Clock::now();
    let mut known_pids: HashSet<u32> = HashSet::new();
    let fd = ring.as_raw_fd();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        while let Some(record) = ring.next() {
            let decoded = match decode(&record, clock) {
                Some(Record::Event(decoded)) => decoded,
                Some(Record::LibraryMapped { pid }) => {
                    let _ = discovery.send(Discovery::Mapped(pid));
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
                    let _ = discovery.send(Discovery::Exec(*pid));
                    after = container_event(*pid, *ts);
                }
                CaptureEvent::Exit { pid, .. } => {
                    known_pids.remove(pid);
                }
                CaptureEvent::Data(chunk) if known_pids.insert(chunk.conn.pid) => {
                    let (pid, ts) = (chunk.conn.pid, chunk.ts);
                    before.push(process_identity(pid, ts, decoded.comm));
                    before.extend(container_event(pid, ts));
                }
                CaptureEvent::Socket {
                    conn,
                    fd,
                    peer,
                    local,
                    ..
                } => {
                    if let Some((local_address, peer_address)) =
                        sockets::tcp_addresses(conn.pid, *fd)
                    {
                        *local = Some(local_address);
                        peer.get_or_insert(peer_address);
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
        if stopping {
            return;
        }
        wait_readable(fd, DRAIN_INTERVAL);
    }
}

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

fn discover_loop(mut probes: Probes, stop: Arc<AtomicBool>, requests: Receiver<Discovery>) {
    let mut pending: Vec<(Instant, u32)> = Vec::new();
    let mut next_full_scan = Instant::now() + RESCAN_INTERVAL;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let next_due = pending
            .iter()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or(next_full_scan)
            .min(next_full_scan);
        let wait = next_due
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        let first = match requests.recv_timeout(wait) {
            Ok(request) => Some(request),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // A program's loader maps its libraries in a burst: scan each process once per burst.
        let mut scan_now: Vec<u32> = Vec::new();
        for request in first.into_iter().chain(requests.try_iter()) {
            let pid = match request {
                Discovery::Exec(pid) => {
                    let now = Instant::now();
                    pending.extend(RESCANS_AFTER_EXEC.iter().map(|delay| (now + *delay, pid)));
                    pid
                }
                Discovery::Mapped(pid) => pid,
            };
            if !scan_now.contains(&pid) {
                scan_now.push(pid);
            }
        }
        for pid in scan_now {
            scan_process(&mut probes, pid);
        }
        let now = Instant::now();
        pending.retain(|&(at, pid)| {
            if at <= now {
                scan_process(&mut probes, pid);
                false
            } else {
                true
            }
        });
        if now >= next_full_scan {
            for pid in all_pids() {
                scan_process(&mut probes, pid);
            }
            release_freed_memory();
            next_full_scan = Instant::now() + RESCAN_INTERVAL;
        }
    }
}
