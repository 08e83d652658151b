//! The exec gate against the real kernel: a held exec waits for the observer, never longer than
//! the bound, costs nothing more once the observer stops answering, and is let go when the
//! observer dies. Needs root (fanotify); skipped otherwise.
//!
//! Tests that need the observer's side in a process of its own (to stop it, to kill it) re-run
//! this test binary with only `observer_side_for_other_tests`, configured by environment.
use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use observer::capture::{ExecGate, Hold, HoldKind};

const GATE_PROGRAM: &str = env!("CARGO_BIN_EXE_observer");
/// Tells the re-run test binary to be the observer's side, holding this file's execs.
const KEPT_FILE_VAR: &str = "EXEC_GATE_TEST_KEPT_FILE";
/// How long it keeps them, in ms (absent: never released).
const KEEP_MS_VAR: &str = "EXEC_GATE_TEST_KEEP_MS";
const BOUND_MS_VAR: &str = "EXEC_GATE_TEST_BOUND_MS";
const READY: &str = "exec-gate-test ready";
const HELD: &str = "exec-gate-test held";

/// One gate at a time: each holds every exec on the host.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the exec gate needs root (fanotify permission events)");
        return None;
    }
    Some(
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

type FileId = (u64, u64);

fn file_id(file: &File) -> FileId {
    let metadata = file.metadata().expect("metadata of a held file");
    (metadata.dev(), metadata.ino())
}

fn id_of(path: &Path) -> FileId {
    file_id(&File::open(path).expect("opening a test file"))
}

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    pid: u32,
    kind: HoldKind,
    file: FileId,
}

/// Releases every hold at once, except those of the `kept` file: released after `keep` (None:
/// never). Every hold is reported on `seen`.
fn answer_holds(
    gate: &ExecGate,
    holds: Receiver<Hold>,
    kept: FileId,
    keep: Option<Duration>,
    seen: &Sender<Seen>,
    stop: &AtomicBool,
) {
    let mut never_released = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let hold = match holds.recv_timeout(Duration::from_millis(20)) {
            Ok(hold) => hold,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let file = file_id(&hold.file);
        let _ = seen.send(Seen {
            pid: hold.pid,
            kind: hold.kind,
            file,
        });
        if file != kept {
            gate.release(hold);
            continue;
        }
        match keep {
            Some(keep) => {
                std::thread::sleep(keep);
                gate.release(hold);
            }
            None => never_released.push(hold),
        }
    }
}

/// A copy of `true` under its own inode, so that its holds are told from the host's execs.
fn marker_program(dir: &Path) -> PathBuf {
    let path = dir.join("held-program");
    std::fs::copy(find_true(), &path).expect("copying true");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn find_true() -> &'static Path {
    ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect("a `true` program")
}

/// How long running `program` takes, from spawn to exit.
fn timed_run(program: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new(program)
        .stdout(Stdio::null())
        .status()
        .expect("running a program");
    assert!(status.success(), "{} failed", program.display());
    start.elapsed()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[test]
fn an_exec_waits_for_the_release() {
    let Some(_serial) = serial() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let program = marker_program(dir.path());
    let kept = id_of(&program);
    let (gate, holds) =
        ExecGate::start_with(Path::new(GATE_PROGRAM), Duration::from_secs(2)).expect("gate");
    let (seen_tx, seen_rx) = mpsc::channel();
    let stop = AtomicBool::new(false);
    let (pid, took) = std::thread::scope(|scope| {
        let (gate, seen_tx, stop) = (&gate, &seen_tx, &stop);
        scope.spawn(move || {
            answer_holds(
                gate,
                holds,
                kept,
                Some(Duration::from_millis(300)),
                seen_tx,
                stop,
            )
        });
        let start = Instant::now();
        let mut child = Command::new(&program).spawn().expect("spawn");
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        let took = start.elapsed();
        stop.store(true, Ordering::SeqCst);
        (pid, took)
    });
    assert!(
        took >= Duration::from_millis(300),
        "held for 300 ms, ran in {:.1} ms",
        ms(took)
    );
    let held: Vec<Seen> = seen_rx
        .try_iter()
        .filter(|seen| seen.file == kept)
        .collect();
    assert_eq!(
        held,
        [Seen {
            pid,
            kind: HoldKind::Exec,
            file: kept
        }]
    );
    let stats = gate.stats();
    assert!(stats.filesystems_marked >= 1, "{stats:?}");
    assert!(stats.released_by_observer >= 1, "{stats:?}");
    assert!(
        stats.max_hold_time >= Duration::from_millis(300),
        "{stats:?}"
    );
}

#[test]
fn an_unanswered_exec_waits_the_bound_once_then_none_wait() {
    let Some(_serial) = serial() else { return };
    let bound = Duration::from_millis(500);
    let (gate, holds) = ExecGate::start_with(Path::new(GATE_PROGRAM), bound).expect("gate");
    let stop = AtomicBool::new(false);
    let (first, later) = std::thread::scope(|scope| {
        // Takes every hold and never answers.
        let stop = &stop;
        scope.spawn(move || {
            let mut kept = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                kept.extend(holds.recv_timeout(Duration::from_millis(20)));
            }
        });
        let first = timed_run(find_true());
        let later: Vec<Duration> = (0..5).map(|_| timed_run(find_true())).collect();
        stop.store(true, Ordering::SeqCst);
        (first, later)
    });
    assert!(
        first >= bound - Duration::from_millis(50) && first < bound + Duration::from_millis(300),
        "the first exec took {:.1} ms for a bound of {:.0} ms",
        ms(first),
        ms(bound)
    );
    for took in later {
        assert!(
            took < Duration::from_millis(100),
            "a later exec took {:.1} ms",
            ms(took)
        );
    }
    let stats = gate.stats();
    assert!(stats.released_by_gate >= 1, "{stats:?}");
    assert_eq!(stats.released_by_observer, 0, "{stats:?}");
}

#[test]
fn opens_of_a_marked_file_are_held_and_no_other() {
    let Some(_serial) = serial() else { return };
    let Some(libssl) = [
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/aarch64-linux-gnu/libssl.so.3",
        "/usr/lib/aarch64-linux-gnu/libssl.so.3",
        "/usr/lib64/libssl.so.3",
        "/usr/lib/libssl.so.3",
    ]
    .into_iter()
    .map(Path::new)
    .find(|path| path.exists()) else {
        eprintln!("skipped: no libssl.so.3 on this host");
        return;
    };
    let Some(python) = find_in_path("python3") else {
        eprintln!("skipped: no python3 on this host");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("libssl.so.3");
    std::fs::copy(libssl, &copy).expect("copying libssl");
    let kept = id_of(&copy);
    let (gate, holds) =
        ExecGate::start_with(Path::new(GATE_PROGRAM), Duration::from_secs(2)).expect("gate");
    gate.hold_opens_of(&File::open(&copy).expect("open"))
        .expect("marking the copy");
    let (seen_tx, seen_rx) = mpsc::channel();
    let stop = AtomicBool::new(false);
    let (pid, took) = std::thread::scope(|scope| {
        let (gate, seen_tx, stop) = (&gate, &seen_tx, &stop);
        scope.spawn(move || {
            answer_holds(
                gate,
                holds,
                kept,
                Some(Duration::from_millis(300)),
                seen_tx,
                stop,
            )
        });
        let start = Instant::now();
        let mut child = Command::new(&python)
            .args(["-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])"])
            .arg(&copy)
            .spawn()
            .expect("spawn python3");
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        let took = start.elapsed();
        stop.store(true, Ordering::SeqCst);
        (pid, took)
    });
    assert!(
        took >= Duration::from_millis(300),
        "the open was held 300 ms, python ran in {:.1} ms",
        ms(took)
    );
    let opens: Vec<Seen> = seen_rx
        .try_iter()
        .filter(|seen| seen.kind == HoldKind::Open)
        .collect();
    assert!(
        opens.iter().all(|seen| seen.file == kept),
        "opens of other files were held: {opens:?}"
    );
    assert!(
        opens.iter().any(|seen| seen.pid == pid),
        "no open held for python (pid {pid}): {opens:?}"
    );
    assert_eq!(gate.stats().files_marked, 1);
}

#[test]
fn filesystems_mounted_later_are_marked_on_request() {
    let Some(_serial) = serial() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let [tmpfs, lower, upper, work, merged] =
        ["tmpfs", "lower", "upper", "work", "merged"].map(|name| dir.path().join(name));
    for path in [&tmpfs, &lower, &upper, &work, &merged] {
        std::fs::create_dir(path).expect("mkdir");
    }
    marker_program(&lower);
    let overlay = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let (gate, holds) =
        ExecGate::start_with(Path::new(GATE_PROGRAM), Duration::from_secs(2)).expect("gate");
    let (seen_tx, seen_rx) = mpsc::channel();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (gate, seen_tx, stop) = (&gate, &seen_tx, &stop);
        scope.spawn(move || answer_holds(gate, holds, (0, 0), None, seen_tx, stop));
        let mounts = (
            Mounted::new(&["-t", "tmpfs", "tmpfs"], &tmpfs),
            Mounted::new(&["-t", "overlay", "overlay", "-o", &overlay], &merged),
        );
        let (Some(tmpfs_mount), Some(overlay_mount)) = mounts else {
            eprintln!("skipped: cannot mount a tmpfs and an overlay here");
            stop.store(true, Ordering::SeqCst);
            return;
        };
        let on_tmpfs = marker_program(&tmpfs);
        let on_overlay = merged.join("held-program");
        let held = |program: &Path| {
            let file = id_of(program);
            timed_run(program);
            seen_rx.try_iter().any(|seen| seen.file == file)
        };
        assert!(!held(&on_tmpfs), "held before its filesystem was marked");
        gate.mark_new_filesystems();
        assert!(held(&on_tmpfs), "an exec on a new tmpfs was not held");
        assert!(held(&on_overlay), "an exec on an overlay was not held");
        // Unmounted while holds are still answered: umount is held too.
        drop((tmpfs_mount, overlay_mount));
        stop.store(true, Ordering::SeqCst);
    });
}

/// A filesystem mounted for a test, lazily unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn new(args: &[&str], target: &Path) -> Option<Mounted> {
        let mounted = Command::new("mount")
            .args(args)
            .arg(target)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Mounted(target.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[test]
fn a_stopped_observer_costs_one_bound_then_holds_resume() {
    let Some(_serial) = serial() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let program = marker_program(dir.path());
    let bound = Duration::from_millis(500);
    let mut observer = ObserverProcess::start(&program, bound, Some(Duration::from_millis(200)));

    let answered = timed_run(find_true());
    assert!(
        answered < Duration::from_millis(250),
        "an exec took {:.1} ms with the observer answering",
        ms(answered)
    );

    observer.signal(Signal::SIGSTOP);
    let first = timed_run(find_true());
    let later = timed_run(find_true());
    assert!(
        first < bound + Duration::from_millis(300),
        "with the observer stopped the first exec took {:.1} ms (bound {:.0} ms)",
        ms(first),
        ms(bound)
    );
    assert!(
        later < Duration::from_millis(100),
        "with the observer stopped a later exec took {:.1} ms",
        ms(later)
    );

    observer.signal(Signal::SIGCONT);
    // It answers the holds forwarded while it was stopped, which tells the gate it is back.
    std::thread::sleep(Duration::from_millis(300));
    let held = timed_run(&program);
    assert!(
        held >= Duration::from_millis(200),
        "after SIGCONT the exec should be held 200 ms again; it took {:.1} ms",
        ms(held)
    );
    assert!(observer.line(HELD, Duration::from_secs(1)).is_some());
}

#[test]
fn a_killed_observer_releases_everything_and_the_gate_exits() {
    let Some(_serial) = serial() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let program = marker_program(dir.path());
    // A long bound: only the observer's death can end this hold in time.
    let mut observer = ObserverProcess::start(&program, Duration::from_secs(20), None);
    let gate_pid = observer.gate_pid;
    let held_run = std::thread::spawn({
        let program = program.clone();
        move || {
            timed_run(&program);
            Instant::now()
        }
    });
    observer
        .line(HELD, Duration::from_secs(5))
        .expect("the observer reports the hold");
    let killed = Instant::now();
    observer.signal(Signal::SIGKILL);

    let finished = held_run.join().expect("the held program's thread");
    assert!(
        finished.duration_since(killed) < Duration::from_secs(1),
        "the held exec went on {:.1} ms after the observer's death",
        ms(finished.duration_since(killed))
    );
    let deadline = killed + Duration::from_secs(1);
    while !exited(gate_pid) {
        assert!(
            Instant::now() < deadline,
            "the gate (pid {gate_pid}) still runs 1 s after the observer's death"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = timed_run(find_true());
    assert!(
        after < Duration::from_millis(100),
        "an exec took {:.1} ms after the gate exited",
        ms(after)
    );
}

/// Gone, or a zombie nobody reaped yet.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// The observer's side of the gate in a process of its own: this test binary re-run.
struct ObserverProcess {
    child: Child,
    lines: Receiver<String>,
    gate_pid: u32,
}

impl ObserverProcess {
    fn start(kept: &Path, bound: Duration, keep: Option<Duration>) -> ObserverProcess {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "--exact",
                "observer_side_for_other_tests",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KEPT_FILE_VAR, kept)
            .env(BOUND_MS_VAR, bound.as_millis().to_string())
            .stdout(Stdio::piped());
        if let Some(keep) = keep {
            command.env(KEEP_MS_VAR, keep.as_millis().to_string());
        }
        let mut child = command.spawn().expect("starting the observer's side");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut observer = ObserverProcess {
            child,
            lines,
            gate_pid: 0,
        };
        let ready = observer
            .line(READY, Duration::from_secs(10))
            .expect("the observer's side starts its gate");
        observer.gate_pid = ready.trim().parse().expect("the gate's pid");
        observer
    }

    /// What follows `tag` in the next line that has it (the test harness may have started the
    /// line with the test's name).
    fn line(&mut self, tag: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some((_, rest)) = line.split_once(tag) {
                return Some(rest.to_string());
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signalling the observer");
    }
}

impl Drop for ObserverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The observer's side for the tests above (does nothing when run on its own): starts a gate,
/// prints its pid, releases every hold at once but those of one file, and never returns.
#[test]
fn observer_side_for_other_tests() {
    let Some(kept) = std::env::var_os(KEPT_FILE_VAR) else {
        return;
    };
    let number = |var: &str| -> Option<u64> { std::env::var(var).ok()?.parse().ok() };
    let bound = Duration::from_millis(number(BOUND_MS_VAR).expect("a bound"));
    let keep = number(KEEP_MS_VAR).map(Duration::from_millis);
    let kept = id_of(Path::new(&kept));
    let (gate, holds) = ExecGate::start_with(Path::new(GATE_PROGRAM), bound).expect("gate");
    println!("{READY} {}", gate.gate_pid());
    std::io::stdout().flush().expect("stdout");
    let (seen_tx, seen_rx) = mpsc::channel::<Seen>();
    std::thread::spawn(move || {
        for seen in seen_rx.iter().filter(|seen| seen.file == kept) {
            println!("{HELD} {}", seen.pid);
        }
    });
    answer_holds(&gate, holds, kept, keep, &seen_tx, &AtomicBool::new(false));
}

/// What the gate adds to each exec with an observer that releases at once: rounds with and
/// without it, interleaved so that the host's other load falls on both alike.
#[test]
#[ignore = "a measurement: cargo test --release -p observer --test exec_gate -- --ignored --nocapture"]
fn exec_cost_of_the_gate() {
    let Some(_serial) = serial() else { return };
    const ROUNDS: usize = 5;
    const RUNS_PER_ROUND: usize = 40;
    let runs = |into: &mut Vec<Duration>| {
        into.extend((0..RUNS_PER_ROUND).map(|_| timed_run(find_true())));
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut stats = None;
    timed_run(find_true());
    for _ in 0..ROUNDS {
        runs(&mut without);
        let (gate, holds) =
            ExecGate::start_with(Path::new(GATE_PROGRAM), Duration::from_secs(1)).expect("gate");
        let (seen_tx, _seen_rx) = mpsc::channel();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (gate, seen_tx, stop) = (&gate, &seen_tx, &stop);
            scope.spawn(move || answer_holds(gate, holds, (0, 0), None, seen_tx, stop));
            runs(&mut with);
            stop.store(true, Ordering::SeqCst);
        });
        stats = Some(gate.stats());
    }
    let report = |label: &str, runs: &mut Vec<Duration>| {
        runs.sort();
        let at = |quantile: f64| runs[((runs.len() - 1) as f64 * quantile) as usize];
        let mean = runs.iter().sum::<Duration>() / runs.len() as u32;
        println!(
            "{label} ({} runs): mean {:.3} ms, median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            runs.len(),
            ms(mean),
            ms(at(0.5)),
            ms(at(0.9)),
            ms(at(0.99)),
        );
        (mean, at(0.5))
    };
    let (mean_without, median_without) = report("/bin/true without the gate", &mut without);
    let (mean_with, median_with) = report("/bin/true with the gate", &mut with);
    println!(
        "added per exec: {:.3} ms (means), {:.3} ms (medians); last round: {stats:?}",
        ms(mean_with) - ms(mean_without),
        ms(median_with) - ms(median_without),
    );
}
