//! Which processes the probes follow, and when that changes.
//!
//! Probes are switched on per process (see `uprobe_links`), so the question for each process is
//! whether following it is worth its cost:
//! - Whole host: a process is followed when what it runs can make network calls (it or a library
//!   it needs imports `connect`/`send`, or carries a TLS stack the probes read), from its `execve`
//!   (held by the exec gate until its probes are in place) or from the observer's start. A
//!   program that can only load such code later (`dlopen`) is followed once it has lived a
//!   moment; one that opens a TLS library is followed then (the gate holds that open too).
//! - A followed process that makes more probed calls than its budget (~1 % of a CPU) without an
//!   LLM call under way is dropped: its probes are switched off, but for `connect`, so that a
//!   connection to a peer it never talked to brings it back (with a growing back-off).
//! - A process that makes LLM calls is followed whatever it costs.
//! - Scoped (a command, `--pid`): the given processes and their descendants are followed, and
//!   never dropped.
mod attach;
mod events;

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender},
    },
    time::{Duration, Instant},
};

use observer_common::{Followed, followed_flags};

use super::{
    Judgement,
    analysis::{AnalysisCache, AnalysisCounts, FileAnalysis, Probe},
    analyst::{Analyst, Job},
    discover::{self, FileId, MappedFile},
    gate::{ExecGate, GateStats, Hold, HoldKind},
    lock,
    probes::{Probes, ProgramRef, SharedMaps},
    sockets,
    uprobe_links::{Link, ProbeKey, Site},
};

/// A forked child of a followed process is followed after this unless it has exec'd by then
/// (then its exec decides): shells fork and exec at once.
const FORK_GRACE: Duration = Duration::from_millis(20);
/// A dropped process that connects to a new peer is followed again at the earliest after this,
/// doubled at each drop, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often new filesystems are marked for exec holds.
const FILESYSTEM_REFRESH: Duration = Duration::from_secs(5);

/// What the follower is asked to do.
pub(super) enum Request {
    /// The gate holds a process at an exec or at the open of a TLS library.
    Hold(Hold),
    /// A process exec'd (the kernel's tracepoint: execs the gate did not hold, or no gate).
    Exec(u32),
    Fork {
        parent: u32,
        child: u32,
    },
    /// A followed process's loader loaded libraries.
    LibraryMapped(u32),
    /// A dropped process connected to a new peer.
    Connect(u32),
    Exit(u32),
    LlmClient(u32),
    Judged {
        pid: u32,
        judgement: Judgement,
    },
    /// Follow this process and its descendants (scoped capture), for the program it is about
    /// to run (its own executable if none); answered once its probes are on.
    FollowRoot {
        pid: u32,
        program: Option<PathBuf>,
        done: SyncSender<()>,
    },
    /// A forked child looked at again, unless it exec'd meanwhile.
    LookAgain {
        pid: u32,
        fork: LaterFork,
    },
    /// The analyses a parked request waited for are done (see `analyst`).
    Analysed(u64),
    /// The capture stops: switch everything off.
    Stop,
}

impl Request {
    /// The process a request is about, when serving it may need files analysed.
    fn process(&self) -> Option<u32> {
        match self {
            Request::Hold(hold) => Some(hold.pid),
            Request::Exec(pid)
            | Request::LibraryMapped(pid)
            | Request::Connect(pid)
            | Request::LookAgain { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// Requests parked waiting for analyses, at most (each may hold an exec and its open file).
const MAX_PARKED: usize = 256;
/// Times one request is served again after analyses before it goes on without the rest.
const MAX_ANALYSIS_ROUNDS: u8 = 3;

/// What the follower has done, for the metrics and the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowStats {
    pub followed_now: u64,
    pub followed_total: u64,
    pub dropped_costly: u64,
    pub readmitted: u64,
    /// Links opened so far, each switching one program's probes in one file on for one process.
    pub links_opened: u64,
    /// Probe sites switched on now, summed over the processes they are on for.
    pub process_probes: u64,
    /// Probes attached for every process on the host (none: everything is per process).
    pub host_wide_probes: u64,
    pub files_with_tls: u64,
    pub analyses: AnalysisCounts,
    /// Requests (exec holds among them) that waited for files to be analysed off the
    /// follower's thread.
    pub analysis_waits: u64,
    /// Requests served without the analyses they needed: their user's queue was full.
    pub analyses_skipped: u64,
    pub attach_failures: u64,
    /// Processes whose probes came on while they had TCP connections open.
    pub attached_late: u64,
}

/// Where a process is when its following starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// At the start of a program (its exec, or forked by a followed process): nothing it did
    /// on the network went unseen.
    Fresh,
    /// Already running: connections it opened before may have carried calls.
    Running,
}

enum Tracked {
    Followed(Following),
    /// Only its loader's hook is probed (it may load network code later).
    Watched(HashMap<ProbeKey, Link>),
    Dropped(Dropped),
}

#[derive(Default)]
struct Following {
    enabled: HashMap<ProbeKey, Link>,
    llm_client: bool,
    /// Times it was dropped before (the back-off before it is followed again grows with them).
    drops: u32,
    /// Costly windows passed over (see [`GRACE_WINDOWS`]).
    graced: u8,
}

/// A process found costly before any of its traffic reached the pipeline, while the kernel sees
/// it opening TLS connections in that window, is judged again at its next costly window, up to
/// this many times (about 2 s at the budget's rate), the first time it is followed: a batch
/// client may spend its first second on a thousand TLS handshakes before any request goes out.
/// A process whose traffic was seen, or that opens no TLS connection (a database client), is
/// judged at once.
const GRACE_WINDOWS: u8 = 20;

struct Dropped {
    sentinel: HashMap<ProbeKey, Link>,
    at: Instant,
    drops: u32,
}

/// A child forked by a followed process, looked at again unless it exec'd meanwhile: the
/// executable it ran when forked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LaterFork {
    exe: Option<FileId>,
}

pub(super) struct Follower {
    probes: Probes,
    maps: Arc<Mutex<SharedMaps>>,
    analyses: Arc<AnalysisCache>,
    /// Whole host, once running: files never seen are analysed there, not here.
    analyst: Option<Analyst>,
    /// Files the request being served needs analysed, and the program whose libraries too.
    unknown: Vec<MappedFile>,
    unknown_program: Option<(u32, MappedFile)>,
    /// Requests waiting for their analyses, by job, with the rounds they have left.
    parked: HashMap<u64, (Request, u8)>,
    next_job: u64,
    gate: Option<ExecGate>,
    scoped: bool,
    in_scope: HashSet<u32>,
    processes: HashMap<u32, Tracked>,
    later: Vec<(Instant, u32, LaterFork)>,
    /// TLS libraries whose opens the gate holds, and files whose TLS probes were logged.
    held_libraries: HashSet<FileId>,
    announced: HashSet<FileId>,
    own_pids: Vec<u32>,
    /// The files each tracked process was seen mapping (or about to map): a library loaded late
    /// is told from them.
    seen: HashMap<u32, HashMap<FileId, PathBuf>>,
    /// The program each process was last seen exec'ing: the tracepoint reports execs the gate
    /// already held, which need no second look.
    exec_seen: HashMap<u32, FileId>,
    stats: Arc<Mutex<FollowStats>>,
    gate_stats: Arc<Mutex<Option<GateStats>>>,
}

impl Follower {
    pub fn new(
        probes: Probes,
        maps: Arc<Mutex<SharedMaps>>,
        analyses: Arc<AnalysisCache>,
        gate: Option<ExecGate>,
        scoped: bool,
        stats: Arc<Mutex<FollowStats>>,
        gate_stats: Arc<Mutex<Option<GateStats>>>,
    ) -> Follower {
        let mut own_pids = vec![std::process::id()];
        own_pids.extend(gate.as_ref().map(ExecGate::gate_pid));
        Follower {
            probes,
            maps,
            analyses,
            analyst: None,
            unknown: Vec::new(),
            unknown_program: None,
            parked: HashMap::new(),
            next_job: 0,
            gate,
            scoped,
            in_scope: HashSet::new(),
            processes: HashMap::new(),
            later: Vec::new(),
            held_libraries: HashSet::new(),
            announced: HashSet::new(),
            own_pids,
            exec_seen: HashMap::new(),
            seen: HashMap::new(),
            stats,
            gate_stats,
        }
    }

    /// Scoped capture: follows `pid` (and, from now on, its descendants), running `program`
    /// (or, if none, what it runs now).
    pub fn follow_root(&mut self, pid: u32, program: Option<&Path>) {
        self.in_scope.insert(pid);
        let start = if program.is_some() {
            Start::Fresh
        } else {
            Start::Running
        };
        let exe = match program {
            Some(path) => FileId::of(path).map(|id| MappedFile {
                id,
                host_path: path.to_path_buf(),
            }),
            None => process_file(pid, "exe"),
        };
        if let Some(exe) = exe {
            self.exec_seen.insert(pid, exe.id);
            let files = self.closure(pid, &exe);
            self.follow(pid, &files, start);
        }
        self.publish();
    }

    /// Whole host: follows every process already running whose programs can make network calls,
    /// and has the gate hold opens of the host's TLS libraries.
    pub fn follow_running(&mut self) {
        for path in discover::system_tls_libraries() {
            if let Some(id) = FileId::of(&path) {
                self.hold_opens_if_tls(&MappedFile {
                    id,
                    host_path: path,
                });
            }
        }
        if self.scoped {
            return;
        }
        for pid in discover::all_pids() {
            if self.own_pids.contains(&pid) {
                continue;
            }
            let files = discover::executable_mappings(pid);
            if files.is_empty() {
                continue;
            }
            let wanted = files.iter().any(|file| {
                self.analysis(file)
                    .is_some_and(|a| a.networked() || a.imports_loader)
            });
            if wanted {
                self.follow(pid, &files, Start::Running);
            }
        }
        self.publish();
    }

    /// Serves requests until the channel closes (the capture stops). Watching the whole host,
    /// files never seen are analysed by an [`Analyst`] that reports on `analysed`.
    pub fn run(mut self, requests: Receiver<Request>, analysed: Sender<Request>) {
        if !self.scoped {
            match Analyst::start(self.analyses.clone(), analysed) {
                Ok(analyst) => self.analyst = Some(analyst),
                Err(error) => log::warn!(
                    "could not start the analysing thread ({error}); new programs are read \
                     while every exec waits"
                ),
            }
        }
        let mut next_refresh = Instant::now() + FILESYSTEM_REFRESH;
        loop {
            let now = Instant::now();
            let next_due = self
                .later
                .iter()
                .map(|(at, ..)| *at)
                .min()
                .unwrap_or(next_refresh)
                .min(next_refresh);
            let first = match requests.recv_timeout(next_due.saturating_duration_since(now)) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // A loader maps libraries in bursts (two reports per dlopen): each process is looked
            // at once per burst, after the rest of the batch.
            let mut mapped: Vec<u32> = Vec::new();
            let mut stopping = false;
            for request in first.into_iter().chain(requests.try_iter()) {
                match request {
                    Request::Stop => stopping = true,
                    Request::LibraryMapped(pid) if !mapped.contains(&pid) => mapped.push(pid),
                    Request::LibraryMapped(_) => {}
                    request => self.serve(request, MAX_ANALYSIS_ROUNDS),
                }
            }
            for pid in mapped {
                self.serve(Request::LibraryMapped(pid), MAX_ANALYSIS_ROUNDS);
            }
            if stopping {
                break;
            }
            let now = Instant::now();
            let (due, waiting): (Vec<_>, Vec<_>) =
                self.later.drain(..).partition(|(at, ..)| *at <= now);
            self.later = waiting;
            for (_, pid, fork) in due {
                self.serve(Request::LookAgain { pid, fork }, MAX_ANALYSIS_ROUNDS);
            }
            if now >= next_refresh {
                // Exits of processes no longer followed are not reported by the kernel.
                let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
                self.processes.retain(|pid, _| alive(pid));
                self.exec_seen.retain(|pid, _| alive(pid));
                self.seen.retain(|pid, _| alive(pid));
                if let Some(gate) = &self.gate {
                    gate.mark_new_filesystems();
                }
                super::release_freed_memory();
                next_refresh = now + FILESYSTEM_REFRESH;
            }
            self.publish();
        }
        // Every link closed before the capture says it stopped (the closes share their waits);
        // parked holds are let go with the gate.
        self.parked.clear();
        self.processes.clear();
        self.probes.finish();
    }

    /// Serves `request` with the analyses at hand. One that needs files never seen is parked
    /// until the analyst has read them, then served again (at most `rounds` times); a held
    /// process is let go once its request is done.
    fn serve(&mut self, request: Request, rounds: u8) {
        if let Request::Analysed(job) = request {
            if let Some((parked, rounds)) = self.parked.remove(&job) {
                self.serve(parked, rounds);
            }
            return;
        }
        self.handle(&request);
        let files = std::mem::take(&mut self.unknown);
        let program = self.unknown_program.take();
        let request = if files.is_empty() && program.is_none() {
            request
        } else {
            match self.park(request, rounds, files, program) {
                Ok(()) => return,
                Err(request) => request,
            }
        };
        if let Request::Hold(hold) = request
            && let Some(gate) = &self.gate
        {
            gate.release(hold);
        }
    }

    /// Hands `files` (and `program`'s libraries) to the analyst, in the queue of the user whose
    /// process `request` is about, and keeps `request` until they are read. Gives it back when
    /// it cannot wait: no rounds left, too many parked, or that user's queue full (counted).
    fn park(
        &mut self,
        request: Request,
        rounds: u8,
        files: Vec<MappedFile>,
        program: Option<(u32, MappedFile)>,
    ) -> Result<(), Request> {
        let (Some(analyst), Some(uid)) = (&self.analyst, request.process().and_then(real_uid))
        else {
            return Err(request);
        };
        if rounds == 0 || self.parked.len() >= MAX_PARKED {
            self.stats_mut().analyses_skipped += 1;
            return Err(request);
        }
        let id = self.next_job;
        self.next_job += 1;
        let job = Job {
            id,
            uid,
            files,
            program,
        };
        if analyst.submit(job).is_err() {
            self.stats_mut().analyses_skipped += 1;
            return Err(request);
        }
        self.stats_mut().analysis_waits += 1;
        self.parked.insert(id, (request, rounds - 1));
        Ok(())
    }

    fn handle(&mut self, request: &Request) {
        match *request {
            Request::Hold(ref hold) => self.on_hold(hold),
            Request::Exec(pid) => {
                if let Some(exe) = process_file(pid, "exe") {
                    self.on_exec(pid, &exe);
                }
                self.follow_private_tls_libraries(pid);
            }
            Request::Fork { parent, child } => self.on_fork(parent, child),
            Request::Connect(pid) => self.on_connect(pid),
            Request::LibraryMapped(pid) => self.on_library_mapped(pid),
            Request::LookAgain { pid, fork } => self.look_again(pid, fork),
            Request::Exit(pid) => {
                self.processes.remove(&pid);
                self.exec_seen.remove(&pid);
                self.seen.remove(&pid);
                self.in_scope.remove(&pid);
                self.later.retain(|(_, waiting, _)| *waiting != pid);
            }
            Request::LlmClient(pid) => {
                if let Some(Tracked::Followed(following)) = self.processes.get_mut(&pid) {
                    following.llm_client = true;
                    self.set_flags(pid, followed_flags::KEEP, followed_flags::REPORTED);
                }
            }
            Request::Judged { pid, judgement } => {
                log::debug!("pid {pid} used its probe budget; the pipeline says {judgement:?}");
                let keep = match judgement {
                    Judgement::Calls => true,
                    Judgement::NothingSeen => self.grace(pid),
                    Judgement::NoCalls => false,
                };
                if keep || self.scoped {
                    // Report it again if it is still costly in a later window.
                    self.set_flags(pid, 0, followed_flags::REPORTED);
                } else {
                    self.drop_costly(pid);
                }
            }
            Request::FollowRoot {
                pid,
                ref program,
                ref done,
            } => {
                self.follow_root(pid, program.as_deref());
                let _ = done.send(());
            }
            // Seen by `run` and `serve`.
            Request::Stop | Request::Analysed(_) => {}
        }
    }

    /// Whether `pid` is to be followed at all: in scoped capture, a root or a descendant of one
    /// (asked of its ancestors too: its exec can be held before its fork is reported).
    fn in_scope(&mut self, pid: u32) -> bool {
        if self.own_pids.contains(&pid) {
            return false;
        }
        if !self.scoped || self.in_scope.contains(&pid) {
            return true;
        }
        let mut ancestor = pid;
        for _ in 0..32 {
            match parent_of(ancestor) {
                Some(parent) if parent > 1 => ancestor = parent,
                _ => return false,
            }
            if self.in_scope.contains(&ancestor) {
                self.in_scope.insert(pid);
                return true;
            }
        }
        false
    }
}

/// The file behind `/proc/PID/<link>` (`exe`), reachable from the host.
fn process_file(pid: u32, link: &str) -> Option<MappedFile> {
    let path = PathBuf::from(format!("/proc/{pid}/{link}"));
    Some(MappedFile {
        id: FileId::of(&path)?,
        host_path: path,
    })
}

/// Whether a file's name suggests a TLS library (looked at first when time counts).
fn looks_like_tls(file: &MappedFile) -> bool {
    let name = shown(file);
    let name = name.rsplit('/').next().unwrap_or_default();
    ["ssl", "tls"].iter().any(|word| name.contains(word))
}

/// A thread's clone is reported by the fork tracepoint too; its status names another group.
fn is_process(pid: u32) -> bool {
    status_field(pid, "Tgid:") == Some(pid)
}

fn parent_of(pid: u32) -> Option<u32> {
    status_field(pid, "PPid:")
}

fn status_field(pid: u32, field: &str) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().parse().ok())
}

/// The user a process runs as (its real uid, the first of the four `Uid:` gives).
fn real_uid(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// A file's path for messages: what a held descriptor points at, rather than the descriptor.
fn shown(file: &MappedFile) -> String {
    if (file.host_path.starts_with("/proc/self/fd") || file.host_path.ends_with("exe"))
        && let Ok(target) = fs::read_link(&file.host_path)
    {
        return target.display().to_string();
    }
    file.host_path.display().to_string()
}
