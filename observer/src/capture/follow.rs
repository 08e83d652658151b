//! Which processes the probes follow, and when that changes.
//!
//! Probes are switched on per process (see `uprobe_events`), so the question for each process is
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
use std::{
    collections::{HashMap, HashSet},
    fs,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::{Duration, Instant},
};

use observer_ebpf::{Followed, followed_flags};

use super::{
    analysis::{AnalysisCache, FileAnalysis, Probe},
    discover::{self, FileId, MappedFile},
    gate::{ExecGate, GateStats, Hold, HoldKind},
    lock,
    probes::{Probes, SharedMaps},
    uprobe_events::ProbeKey,
};

/// A program that can only load network code later is followed if it is still running after
/// this (most such execs are short-lived tools and shells).
const LOADER_GRACE: Duration = Duration::from_millis(30);
/// A forked child of a followed process is followed after this unless it has exec'd by then
/// (then its exec decides): shells fork and exec at once.
const FORK_GRACE: Duration = Duration::from_millis(20);
/// A dropped process that connects to a new peer is followed again at the earliest after this,
/// doubled at each drop, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Files of an executable's dependency closure looked at, at most.
const MAX_CLOSURE: usize = 64;
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
        calls_in_flight: bool,
    },
    /// Follow this process and its descendants (scoped capture); answered once its probes are on.
    FollowRoot {
        pid: u32,
        done: SyncSender<()>,
    },
    /// The capture stops: switch everything off.
    Stop,
}

/// What the follower has done, for the metrics and the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowStats {
    pub followed_now: u64,
    pub followed_total: u64,
    pub dropped_costly: u64,
    pub readmitted: u64,
    /// Probes defined (each at most once per file and offset, whatever the number of processes).
    pub probe_definitions: u64,
    /// Per-process probe events open now (probes switched on for one process each).
    pub process_probes: u64,
    /// Probes attached for every process on the host (none: everything is per process).
    pub host_wide_probes: u64,
    pub files_with_tls: u64,
    pub analyses_read: u64,
    pub analyses_cached: u64,
    pub attach_failures: u64,
}

enum Tracked {
    Followed(Following),
    Dropped(Dropped),
}

#[derive(Default)]
struct Following {
    enabled: HashMap<ProbeKey, OwnedFd>,
    llm_client: bool,
    /// Times it was dropped before (the back-off before it is followed again grows with them).
    drops: u32,
}

struct Dropped {
    sentinel: HashMap<ProbeKey, OwnedFd>,
    at: Instant,
    drops: u32,
}

/// Why a process will be looked at again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Later {
    /// A program that loads code at run time: follow it if it still runs this executable.
    Loader { exe: FileId },
    /// A child forked by a followed process, unless it exec'd meanwhile.
    Fork { exe: Option<FileId> },
}

pub(super) struct Follower {
    probes: Probes,
    maps: Arc<Mutex<SharedMaps>>,
    analyses: AnalysisCache,
    gate: Option<ExecGate>,
    scoped: bool,
    in_scope: HashSet<u32>,
    processes: HashMap<u32, Tracked>,
    later: Vec<(Instant, u32, Later)>,
    /// TLS libraries whose opens the gate holds, and files whose TLS probes were logged.
    held_libraries: HashSet<FileId>,
    announced: HashSet<FileId>,
    own_pids: Vec<u32>,
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
        analyses: AnalysisCache,
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
            gate,
            scoped,
            in_scope: HashSet::new(),
            processes: HashMap::new(),
            later: Vec::new(),
            held_libraries: HashSet::new(),
            announced: HashSet::new(),
            own_pids,
            exec_seen: HashMap::new(),
            stats,
            gate_stats,
        }
    }

    /// Scoped capture: follows `pid` (and, from now on, its descendants).
    pub fn follow_root(&mut self, pid: u32) {
        self.in_scope.insert(pid);
        if let Some(exe) = process_file(pid, "exe") {
            let files = self.closure(pid, &exe);
            self.follow(pid, &files);
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
                self.follow(pid, &files);
            }
        }
        self.publish();
    }

    /// Serves requests until the channel closes (the capture stops).
    pub fn run(mut self, requests: Receiver<Request>) {
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
            match requests.recv_timeout(next_due.saturating_duration_since(now)) {
                Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(request) => self.serve(request),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            let (due, waiting): (Vec<_>, Vec<_>) =
                self.later.drain(..).partition(|(at, ..)| *at <= now);
            self.later = waiting;
            for (_, pid, why) in due {
                self.look_again(pid, why);
            }
            if now >= next_refresh {
                // Exits of processes no longer followed are not reported by the kernel.
                let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
                self.processes.retain(|pid, _| alive(pid));
                self.exec_seen.retain(|pid, _| alive(pid));
                if let Some(gate) = &self.gate {
                    gate.mark_new_filesystems();
                }
                super::release_freed_memory();
                next_refresh = now + FILESYSTEM_REFRESH;
            }
            self.publish();
        }
        // Per-process events first: a probe definition in use cannot be removed.
        self.processes.clear();
    }

    fn serve(&mut self, request: Request) {
        match request {
            Request::Hold(hold) => {
                self.on_hold(&hold);
                if let Some(gate) = &self.gate {
                    gate.release(hold);
                }
            }
            Request::Exec(pid) => {
                if let Some(exe) = process_file(pid, "exe") {
                    self.on_exec(pid, &exe);
                }
            }
            Request::Fork { parent, child } => self.on_fork(parent, child),
            Request::LibraryMapped(pid) => {
                if matches!(self.processes.get(&pid), Some(Tracked::Followed(_))) {
                    let files = discover::executable_mappings(pid);
                    self.follow(pid, &files);
                }
            }
            Request::Connect(pid) => self.on_connect(pid),
            Request::Exit(pid) => {
                self.processes.remove(&pid);
                self.exec_seen.remove(&pid);
                self.in_scope.remove(&pid);
                self.later.retain(|(_, waiting, _)| *waiting != pid);
            }
            Request::LlmClient(pid) => {
                if let Some(Tracked::Followed(following)) = self.processes.get_mut(&pid) {
                    following.llm_client = true;
                    self.set_flags(pid, followed_flags::KEEP, followed_flags::REPORTED);
                }
            }
            Request::Judged {
                pid,
                calls_in_flight,
            } => {
                if calls_in_flight || self.scoped {
                    // Report it again if it is still costly in a later window.
                    self.set_flags(pid, 0, followed_flags::REPORTED);
                } else {
                    self.drop_costly(pid);
                }
            }
            Request::FollowRoot { pid, done } => {
                self.follow_root(pid);
                let _ = done.send(());
            }
            Request::Stop => {}
        }
    }

    fn on_hold(&mut self, hold: &Hold) {
        let pid = hold.pid;
        if self.own_pids.contains(&pid) || (self.scoped && !self.in_scope.contains(&pid)) {
            return;
        }
        let path = PathBuf::from(format!("/proc/self/fd/{}", hold.file.as_raw_fd()));
        let Some(id) = FileId::of(&path) else {
            return;
        };
        let file = MappedFile {
            id,
            host_path: path,
        };
        match hold.kind {
            HoldKind::Exec => self.on_exec(pid, &file),
            HoldKind::Open => {
                // A process about to use a TLS library: followed from now on.
                let mut files = discover::executable_mappings(pid);
                files.push(file);
                if matches!(self.processes.get(&pid), Some(Tracked::Dropped(_))) {
                    self.stats_mut().readmitted += 1;
                }
                self.follow(pid, &files);
            }
        }
    }

    /// A process starts running `exe` (held at its exec, or just after it).
    fn on_exec(&mut self, pid: u32, exe: &MappedFile) {
        if self.own_pids.contains(&pid) || (self.scoped && !self.in_scope.contains(&pid)) {
            return;
        }
        if self.exec_seen.get(&pid) == Some(&exe.id) {
            return;
        }
        let Some(exe_analysis) = self.analysis(exe) else {
            return;
        };
        if exe_analysis.interpreter.is_none()
            && exe_analysis.needed.is_empty()
            && !exe_analysis.loader.is_empty()
        {
            // The ELF interpreter's own exec hold, after the program's: already decided.
            return;
        }
        self.exec_seen.insert(pid, exe.id);
        let files = self.closure(pid, exe);
        let analyses: Vec<_> = files.iter().filter_map(|f| self.analysis(f)).collect();
        let networked = analyses.iter().any(|a| a.networked());
        let loads_code = analyses.iter().any(|a| a.imports_loader);
        // Whatever the old image was followed for, the new one decides.
        self.forget(pid);
        if self.scoped || networked {
            self.follow(pid, &files);
        } else if loads_code {
            self.later.push((
                Instant::now() + LOADER_GRACE,
                pid,
                Later::Loader { exe: exe.id },
            ));
        }
    }

    fn on_fork(&mut self, parent: u32, child: u32) {
        if !is_process(child) {
            return;
        }
        if self.scoped {
            if self.in_scope.contains(&parent) {
                self.in_scope.insert(child);
                let files = discover::executable_mappings(child);
                self.follow(child, &files);
            }
            return;
        }
        let exe = process_file(parent, "exe").map(|f| f.id);
        self.later
            .push((Instant::now() + FORK_GRACE, child, Later::Fork { exe }));
    }

    fn look_again(&mut self, pid: u32, why: Later) {
        if self.processes.contains_key(&pid) {
            return;
        }
        let current = process_file(pid, "exe").map(|f| f.id);
        let still = match why {
            Later::Loader { exe } => current == Some(exe),
            Later::Fork { exe } => current.is_some() && current == exe,
        };
        if still {
            let files = discover::executable_mappings(pid);
            self.follow(pid, &files);
        }
    }

    fn on_connect(&mut self, pid: u32) {
        let Some(Tracked::Dropped(dropped)) = self.processes.get(&pid) else {
            return;
        };
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << dropped.drops.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        if dropped.at.elapsed() < backoff {
            return;
        }
        log::info!(
            "following pid {pid} ({}) again: it connected to a new peer",
            comm(pid)
        );
        self.stats_mut().readmitted += 1;
        let files = discover::executable_mappings(pid);
        self.follow(pid, &files);
    }

    /// Switches on, for `pid`, the capture probes of `files` it does not have yet.
    fn follow(&mut self, pid: u32, files: &[MappedFile]) {
        let mut following = match self.processes.remove(&pid) {
            Some(Tracked::Followed(following)) => following,
            Some(Tracked::Dropped(dropped)) => Following {
                drops: dropped.drops,
                ..Following::default()
            },
            None => Following::default(),
        };
        let new = following.enabled.is_empty();
        if new {
            let flags = if self.scoped { followed_flags::KEEP } else { 0 };
            let state = Followed {
                flags,
                ..Default::default()
            };
            if let Err(error) = lock(&self.maps).follow(pid, state) {
                log::debug!("pid {pid}: {error:#}");
            }
        }
        for file in files {
            let Some(analysis) = self.analysis(file) else {
                continue;
            };
            self.hold_opens_if_tls(file);
            let probes = analysis.capture.iter().chain(&analysis.loader);
            self.enable(pid, file, probes, &mut following.enabled);
            if let Some(tls) = &analysis.tls
                && self.announced.insert(file.id)
            {
                log::info!("attached {tls} to {}", shown(file));
            }
        }
        if following.enabled.is_empty() {
            // Nothing to probe: the process is gone, or its programs make no socket calls.
            let _ = lock(&self.maps).unfollow(pid);
            return;
        }
        if new {
            self.stats_mut().followed_total += 1;
        }
        self.processes.insert(pid, Tracked::Followed(following));
    }

    /// No longer tracks `pid` at all (its probes off, sentinel included).
    fn forget(&mut self, pid: u32) {
        if self.processes.remove(&pid).is_some() {
            let _ = lock(&self.maps).unfollow(pid);
        }
    }

    /// Stops following a costly process that makes no LLM call: only its `connect` stays probed.
    fn drop_costly(&mut self, pid: u32) {
        let Some(Tracked::Followed(following)) = self.processes.remove(&pid) else {
            return;
        };
        if following.llm_client {
            self.processes.insert(pid, Tracked::Followed(following));
            return;
        }
        let drops = following.drops + 1;
        drop(following);
        let _ = lock(&self.maps).unfollow(pid);
        let mut sentinel = HashMap::new();
        for file in discover::executable_mappings(pid) {
            if let Some(analysis) = self.analysis(&file) {
                self.enable(pid, &file, analysis.sentinel.iter(), &mut sentinel);
            }
        }
        log::info!(
            "stopped following pid {pid} ({}): over {} probed calls in {} ms, none of them an LLM \
             call; it is followed again if it connects to a new peer or starts a new program",
            comm(pid),
            observer_ebpf::COST_HITS_PER_WINDOW,
            observer_ebpf::COST_WINDOW_NS / 1_000_000
        );
        self.stats_mut().dropped_costly += 1;
        self.processes.insert(
            pid,
            Tracked::Dropped(Dropped {
                sentinel,
                at: Instant::now(),
                drops,
            }),
        );
    }

    fn enable<'a>(
        &mut self,
        pid: u32,
        file: &MappedFile,
        probes: impl Iterator<Item = &'a Probe>,
        enabled: &mut HashMap<ProbeKey, OwnedFd>,
    ) {
        for probe in probes {
            let Some(program) = self.probes.program_named(&probe.program) else {
                continue;
            };
            let key = ProbeKey {
                file: file.id,
                offset: probe.offset,
                program: program.name,
            };
            if enabled.contains_key(&key) {
                continue;
            }
            let switched_on = self
                .probes
                .define(key, &file.host_path, program, probe.library as u64)
                .and_then(|id| self.probes.enable_for(id, pid));
            match switched_on {
                Ok(fd) => {
                    enabled.insert(key, fd);
                }
                Err(error) => {
                    self.stats_mut().attach_failures += 1;
                    log::debug!(
                        "pid {pid}: {} at {} in {}: {error:#}",
                        probe.program,
                        probe.function,
                        shown(file)
                    );
                }
            }
        }
    }

    /// The files `exe` will map: itself, its interpreter and the libraries it needs, as the
    /// loader would find them (its run path, then the usual directories).
    fn closure(&mut self, pid: u32, exe: &MappedFile) -> Vec<MappedFile> {
        let root = discover::root_prefix(pid);
        let mut files = vec![exe.clone()];
        let mut index = 0;
        while index < files.len() && files.len() < MAX_CLOSURE {
            let file = files[index].clone();
            index += 1;
            let Some(analysis) = self.analysis(&file) else {
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
                if let Some(path) =
                    discover::find_library(&root, name, &analysis.search_path, &origin)
                {
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

    fn analysis(&mut self, file: &MappedFile) -> Option<Arc<FileAnalysis>> {
        match self.analyses.get(&file.host_path) {
            Ok(analysis) => {
                if let Some(refused) = &analysis.refused
                    && self.announced.insert(file.id)
                {
                    log::warn!(
                        "not capturing TLS of {}: {refused}. Its calls will not be seen; please \
                         report this build (its version and `file` output).",
                        shown(file)
                    );
                }
                Some(analysis)
            }
            Err(error) => {
                log::debug!("reading {}: {error}", shown(file));
                None
            }
        }
    }

    /// Has the gate hold every later open of `file` if it is a TLS library (a process opening it
    /// is about to use TLS, and is followed from then on).
    fn hold_opens_if_tls(&mut self, file: &MappedFile) {
        let Some(gate) = &self.gate else {
            return;
        };
        if self.held_libraries.contains(&file.id) {
            return;
        }
        let is_library = file
            .host_path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".so"))
            || fs::read_link(&file.host_path).is_ok_and(|p| p.to_string_lossy().contains(".so"));
        let Ok(analysis) = self.analyses.get(&file.host_path) else {
            return;
        };
        if !is_library || analysis.tls.is_none() {
            return;
        }
        self.held_libraries.insert(file.id);
        match fs::File::open(&file.host_path).map_err(anyhow::Error::from) {
            Ok(opened) => {
                if let Err(error) = gate.hold_opens_of(&opened) {
                    log::debug!("holding opens of {}: {error:#}", shown(file));
                }
            }
            Err(error) => log::debug!("opening {}: {error:#}", shown(file)),
        }
    }

    fn set_flags(&self, pid: u32, set: u32, clear: u32) {
        if let Err(error) = lock(&self.maps).update_flags(pid, set, clear) {
            log::debug!("pid {pid}: {error:#}");
        }
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, FollowStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self) {
        let (followed, events) =
            self.processes
                .values()
                .fold((0, 0), |(f, e), tracked| match tracked {
                    Tracked::Followed(following) => (f + 1, e + following.enabled.len()),
                    Tracked::Dropped(dropped) => (f, e + dropped.sentinel.len()),
                });
        let mut stats = self.stats_mut();
        stats.followed_now = followed as u64;
        stats.process_probes = events as u64;
        stats.probe_definitions = self.probes.definitions() as u64;
        stats.files_with_tls = self.announced.len() as u64;
        stats.analyses_read = self.analyses.misses;
        stats.analyses_cached = self.analyses.hits;
        drop(stats);
        if let Some(gate) = &self.gate {
            *self.gate_stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate.stats());
        }
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

/// A thread's clone is reported by the fork tracepoint too; its status names another group.
fn is_process(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Tgid:"))
                .and_then(|tgid| tgid.trim().parse::<u32>().ok())
        })
        == Some(pid)
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// A file's path for messages: what a held descriptor points at, rather than the descriptor.
fn shown(file: &MappedFile) -> String {
    if file.host_path.starts_with("/proc/self/fd") || file.host_path.ends_with("exe") {
        if let Ok(target) = fs::read_link(&file.host_path) {
            return target.display().to_string();
        }
    }
    file.host_path.display().to_string()
}
