//! Process control for the end-to-end tests: the mock server, the observer (command and watch
//! modes, replay) and the clients. Every wait is bounded; every child is killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::calls::ClientCall;
use crate::mock::CANARY_API_KEY;
use crate::span::Span;

/// How long an observer in command mode may take to run its client to completion.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the observer may take to attach its probes and say `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the observer may take to flush and exit after SIGINT/SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root (the parent of tests/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The observer binary: $OBSERVER_BIN, or target/release/observer of this workspace.
pub fn observer_bin() -> PathBuf {
    let path = std::env::var_os("OBSERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/observer"));
    assert!(
        path.is_file(),
        "observer binary not found at {} (set OBSERVER_BIN, or build it: cargo build --release -p observer)",
        path.display()
    );
    path
}

/// The Python with the SDKs: $OBSERVER_E2E_PYTHON, or .venv/bin/python of this workspace.
pub fn python() -> PathBuf {
    installed(
        "OBSERVER_E2E_PYTHON",
        ".venv/bin/python",
        "Python for the test clients",
        "python3 -m venv {root}/.venv && {root}/.venv/bin/pip install -r {root}/tests/requirements.txt",
    )
}

/// Arize Phoenix's launcher: $OBSERVER_PHOENIX, or .venv-phoenix/bin/phoenix of this workspace.
pub fn phoenix() -> PathBuf {
    installed(
        "OBSERVER_PHOENIX",
        ".venv-phoenix/bin/phoenix",
        "Arize Phoenix",
        "python3 -m venv {root}/.venv-phoenix && {root}/.venv-phoenix/bin/pip install -r {root}/tests/requirements-phoenix.txt (or run `cargo xtask test`)",
    )
}

/// A program the tests need: $`variable`, or `default` under the workspace; `install` (with
/// `{root}` for the workspace) says how to get it when it is missing.
fn installed(variable: &str, default: &str, what: &str, install: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    assert!(
        path.exists(),
        "{what} not found at {} (set {variable}, or: {})",
        path.display(),
        install.replace("{root}", &repo_root().display().to_string())
    );
    path
}

/// A program installed from npm by `cargo xtask setup` (under target/npm/node_modules).
pub fn npm_program(relative: &str) -> PathBuf {
    let path = repo_root().join("target/npm/node_modules").join(relative);
    assert!(
        path.is_file(),
        "{} not found: install the npm test programs with `cargo xtask setup`",
        path.display()
    );
    path
}

/// A binary of this workspace built with cargo profile `profile` (target/PROFILE/NAME): the
/// test programs built unlike a release (`cargo xtask test` builds them).
pub fn profile_program(profile: &str, name: &str) -> PathBuf {
    let path = repo_root().join("target").join(profile).join(name);
    assert!(
        path.is_file(),
        "{} not found: build it with `cargo build --profile {profile} -p {name}` (cargo xtask \
         test does)",
        path.display()
    );
    path
}

/// `GET path` on 127.0.0.1:port over HTTP/1.0: the status and body, None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A free TCP port on loopback (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The client scripts (tests/clients).
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// The mock server binary, which cargo builds next to the integration tests
/// (target/<profile>/llm-mock-server; the tests run from target/<profile>/deps/).
fn mock_server_bin() -> PathBuf {
    built_program("llm-mock-server", "cargo builds it with the tests")
}

/// A binary of this workspace in the tests' target directory (target/<profile>/NAME).
pub fn built_program(name: &str, how: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found next to {} ({how})", exe.display()))
}

/// These are eBPF tests: they attach uprobes, which needs root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the observer end-to-end tests attach eBPF uprobes and must run as root (euid is {euid}); run: sudo -E cargo test -p observer-e2e --release"
    );
}

/// One test at a time per test binary: observers attach to the same libraries and the machine
/// is small, so parallel runs would only make timings flaky.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Child processes with captured output

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// The lines a child printed on one stream, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Output(Arc<(Mutex<Lines>, Condvar)>);

impl Output {
    fn pump(&self, reader: impl Read + Send + 'static) {
        let out = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf).unwrap_or(0);
                let (lock, cond) = &*out.0;
                let mut state = lock.lock().unwrap();
                if n == 0 {
                    state.closed = true;
                    cond.notify_all();
                    return;
                }
                let line = String::from_utf8_lossy(&buf);
                state
                    .lines
                    .push(line.trim_end_matches(['\n', '\r']).to_owned());
                cond.notify_all();
            }
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.0.lock().unwrap().lines.clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line matching `pred`; None at end of stream or after `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.0;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(line) = state.lines.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits (bounded) until the writer closed the stream, so every line is in.
    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.0;
        let mut state = lock.lock().unwrap();
        while !state.closed && Instant::now() < deadline {
            state = cond
                .wait_timeout(state, deadline.saturating_duration_since(Instant::now()))
                .unwrap()
                .0;
        }
    }
}

/// A running child in its own process group; the group is killed when this is dropped.
pub struct Proc {
    name: String,
    child: Child,
    pub stdout: Output,
    pub stderr: Output,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, mut command: Command) -> Proc {
        use std::os::unix::process::CommandExt;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let (stdout, stderr) = (Output::default(), Output::default());
        stdout.pump(child.stdout.take().expect("piped stdout"));
        stderr.pump(child.stderr.take().expect("piped stderr"));
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to this process only (not its group).
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the exit, at most `timeout`; on timeout kills the group and panics.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                self.stdout.wait_closed(Duration::from_secs(5));
                self.stderr.wait_closed(Duration::from_secs(5));
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
                    self.name,
                    tail(&self.stdout.text(), 4000),
                    tail(&self.stderr.text(), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: kill(2) on the process group we created for this child.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            self.status = self.child.wait().ok();
        }
    }

    /// A description of this process's output, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, {:?})\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.name,
            self.pid(),
            self.status,
            tail(&self.stdout.text(), 3000),
            tail(&self.stderr.text(), 3000)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

// ---------------------------------------------------------------------------------------------
// The mock server

pub struct MockServer {
    proc: Proc,
    pub port: u16,
    pub ca: PathBuf,
    /// Plaintext HTTP rather than HTTPS.
    pub plain: bool,
}

impl MockServer {
    /// Starts the server; inside network namespace `netns` when given.
    pub fn start(dir: &Path, plain: bool, netns: Option<&str>) -> MockServer {
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", netns])
                    .arg(mock_server_bin());
                command
            }
            None => Command::new(mock_server_bin()),
        };
        command.arg("--cert-dir").arg(dir);
        if plain {
            command.arg("--plain");
        }
        let proc = Proc::spawn("llm-mock-server", command);
        let line = proc
            .stdout
            .wait_for(Duration::from_secs(30), |l| l.starts_with("listening "))
            .unwrap_or_else(|| panic!("mock server did not start:\n{}", proc.describe()));
        // listening 127.0.0.1:PORT cert=PATH
        let (addr, cert) = line["listening ".len()..]
            .split_once(" cert=")
            .unwrap_or_else(|| panic!("bad mock server banner {line:?}"));
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("bad mock server address in {line:?}"));
        MockServer {
            proc,
            port,
            ca: PathBuf::from(cert),
            plain,
        }
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.plain { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The requests the server served so far (one JSON object each: conn, seq, path, status,
    /// response_id, ...).
    pub fn requests(&self) -> Vec<Value> {
        self.proc
            .stdout
            .lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("server log line is JSON"))
            .collect()
    }

    /// The TCP connection the request that answered with `response_id` came on.
    pub fn connection_of(&self, response_id: &str) -> Option<u64> {
        self.requests()
            .iter()
            .find(|r| r["response_id"] == response_id)
            .and_then(|r| r["conn"].as_u64())
    }
}

// ---------------------------------------------------------------------------------------------
// The observer

/// What one observer run left behind.
pub struct ObserverRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub spans: Vec<Span>,
    /// The calls the clients reported (lines of the observer's stdout in command mode).
    pub calls: Vec<ClientCall>,
    pub output_file: PathBuf,
    pub record_file: Option<PathBuf>,
}

impl ObserverRun {
    fn collect(proc: &Proc, status: ExitStatus, output: &Path, record: Option<PathBuf>) -> Self {
        let run = ObserverRun {
            status,
            stdout: proc.stdout.text(),
            stderr: proc.stderr.text(),
            spans: read_spans(output),
            calls: ClientCall::parse_all(&proc.stdout.text()),
            output_file: output.to_path_buf(),
            record_file: record,
        };
        run.assert_no_canary();
        run
    }

    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "observer exited with {:?}\n--- stderr ---\n{}",
            self.status,
            tail(&self.stderr, 6000)
        );
    }

    /// The API key must not appear in anything the observer wrote.
    pub fn assert_no_canary(&self) {
        let mut places = vec![
            ("stdout".to_owned(), self.stdout.clone().into_bytes()),
            ("stderr".to_owned(), self.stderr.clone().into_bytes()),
        ];
        for file in std::iter::once(&self.output_file).chain(&self.record_file) {
            places.push((
                file.display().to_string(),
                std::fs::read(file).unwrap_or_default(),
            ));
        }
        for (place, bytes) in places {
            if let Some(pos) = find(&bytes, CANARY_API_KEY.as_bytes()) {
                let from = pos.saturating_sub(200);
                let to = (pos + 200).min(bytes.len());
                panic!(
                    "the API key {CANARY_API_KEY} leaked into the observer's {place} at byte {pos}: ...{}...",
                    String::from_utf8_lossy(&bytes[from..to])
                );
            }
        }
    }

    /// The spans of one process.
    pub fn spans_of(&self, pid: u32) -> Vec<Span> {
        self.spans
            .iter()
            .filter(|s| s.u64("process.pid") == Some(u64::from(pid)))
            .cloned()
            .collect()
    }

    /// Runs `observer replay` on this run's recording (no root needed) and returns its spans.
    pub fn replay(&self, dir: &Path) -> Vec<Span> {
        let record = self.record_file.as_ref().expect("run was not recorded");
        replay_recording(record, dir)
    }
}

/// Runs `observer replay RECORDING` (no root needed), writing its spans into `dir`.
pub fn replay_recording(record: &Path, dir: &Path) -> Vec<Span> {
    replay_recording_with(record, dir, &[])
}

/// As [`replay_recording`], with more `observer replay` options (`--content redacted`, ...).
pub fn replay_recording_with(record: &Path, dir: &Path, options: &[&str]) -> Vec<Span> {
    let output = dir.join("replay.jsonl");
    let mut command = Command::new(observer_bin());
    command
        .arg("replay")
        .arg(record)
        .arg("--output")
        .arg(&output)
        .args(["--format", "jsonl"])
        .args(options);
    let mut proc = Proc::spawn("observer replay", command);
    let status = proc.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "observer replay failed: {}",
        proc.describe()
    );
    ObserverRun::collect(&proc, status, &output, None).spans
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a JSON-lines span file; every line must be a JSON object.
pub fn read_spans(path: &Path) -> Vec<Span> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => Span(map),
            _ => panic!(
                "{} line {}: not a JSON object: {}",
                path.display(),
                i + 1,
                tail(line, 500)
            ),
        })
        .collect()
}

/// An observer watching the host (no command), until `stop`.
pub struct Watcher {
    proc: Proc,
    output: PathBuf,
}

impl Watcher {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The spans written so far.
    pub fn spans(&self) -> Vec<Span> {
        read_spans(&self.output)
    }

    /// Polls (bounded) until `pred` holds for the spans written so far.
    pub fn wait_for_spans(&self, timeout: Duration, pred: impl Fn(&[Span]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.spans()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pred(&self.spans())
    }

    /// Sends `signal` and waits for the observer to flush and exit.
    pub fn stop(self, signal: i32) -> ObserverRun {
        self.stop_within(signal, STOP_TIMEOUT)
    }

    /// As [`Watcher::stop`], failing the test if the exit takes longer than `timeout`.
    pub fn stop_within(mut self, signal: i32, timeout: Duration) -> ObserverRun {
        self.proc.signal(signal);
        let status = self.proc.wait(timeout);
        ObserverRun::collect(&self.proc, status, &self.output, None)
    }
}

// ---------------------------------------------------------------------------------------------
// A test's environment

/// One test: root checked, serialised, a scratch directory and a mock server.
pub struct TestEnv {
    _serial: MutexGuard<'static, ()>,
    dir: Option<tempfile::TempDir>,
    pub server: MockServer,
}

impl TestEnv {
    /// With an HTTPS mock server.
    pub fn new() -> TestEnv {
        Self::with_server(false, None)
    }

    /// With a plaintext HTTP mock server (Ollama, vLLM and other local servers).
    pub fn plaintext() -> TestEnv {
        Self::with_server(true, None)
    }

    /// With an HTTPS mock server inside network namespace `netns` (which must exist, with
    /// its loopback up).
    pub fn in_network_namespace(netns: &str) -> TestEnv {
        Self::with_server(false, Some(netns))
    }

    fn with_server(plain: bool, netns: Option<&str>) -> TestEnv {
        require_root();
        let serial = serial();
        let dir = tempfile::Builder::new()
            .prefix("observer-e2e-")
            .tempdir()
            .expect("temp dir");
        let server = MockServer::start(dir.path(), plain, netns);
        TestEnv {
            _serial: serial,
            dir: Some(dir),
            server,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// `python clients/SCRIPT ARGS...`
    pub fn client(&self, script: &str, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            python().display().to_string(),
            clients_dir().join(script).display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    pub fn client_env(&self, command: &mut Command) {
        command
            .env("MOCK_BASE", self.server.base_url())
            .env("MOCK_CA", &self.server.ca)
            .env("MOCK_API_KEY", CANARY_API_KEY)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONWARNINGS", "ignore");
    }

    fn observer(&self, mode_args: &[&str], extra: &[&str]) -> (Command, PathBuf) {
        let output = self.dir().join(format!(
            "spans-{}.jsonl",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut command = Command::new(observer_bin());
        command
            .arg("capture")
            .arg("--output")
            .arg(&output)
            .args(["--format", "jsonl"])
            .args(mode_args)
            .args(extra);
        self.client_env(&mut command);
        (command, output)
    }

    /// `observer capture --output F --format jsonl [--record R] -- CLIENT...`: runs the client
    /// under the observer to completion. Asserts exit 0 and no leaked key.
    pub fn capture(&self, client: &[String], record: bool) -> ObserverRun {
        self.capture_with(&[], &[], client, record)
    }

    /// As [`TestEnv::capture`], with more arguments for `observer capture` (e.g. an OTLP
    /// endpoint) and more environment variables for it and the client.
    pub fn capture_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        client: &[String],
        record: bool,
    ) -> ObserverRun {
        let record_file = record.then(|| self.dir().join("capture.rec"));
        let mut extra: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(r) = &record_file {
            extra.extend(["--record".to_owned(), r.display().to_string()]);
        }
        extra.push("--".to_owned());
        extra.extend(client.iter().cloned());
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (mut command, output) = self.observer(&[], &extra);
        command.envs(env.iter().copied());
        let mut proc = Proc::spawn("observer capture -- client", command);
        let status = proc.wait(COMMAND_TIMEOUT);
        let run = ObserverRun::collect(&proc, status, &output, record_file);
        assert!(
            run.status.success(),
            "observer capture -- {client:?} failed: {}",
            proc.describe()
        );
        run
    }

    /// `observer capture --output F --format jsonl FILTERS...` watching until stopped; returns
    /// once it printed `ready`.
    pub fn watch(&self, filters: &[&str]) -> Watcher {
        self.watch_with_env(filters, &[])
    }

    /// As [`TestEnv::watch`], with `env` added to the observer's environment.
    pub fn watch_with_env(&self, filters: &[&str], env: &[(&str, &str)]) -> Watcher {
        let (mut command, output) = self.observer(filters, &[]);
        command.envs(env.iter().copied());
        let proc = Proc::spawn("observer capture (watch)", command);
        if proc
            .stderr
            .wait_for(READY_TIMEOUT, |l| l.starts_with("ready"))
            .is_none()
        {
            panic!(
                "observer did not print `ready` on stderr within {READY_TIMEOUT:?}: {}",
                proc.describe()
            );
        }
        Watcher { proc, output }
    }

    /// Copies `source` to a new file (a new inode), executable: a program never seen.
    pub fn fresh_copy(&self, source: &Path) -> PathBuf {
        let dir = self.dir().join("fresh");
        std::fs::create_dir_all(&dir).expect("fresh dir");
        let target = dir.join(source.file_name().expect("a file name"));
        std::fs::copy(source, &target)
            .unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
        target
    }

    /// Watches the host with an analysis cache of its own, empty.
    pub fn watch_unseen(&self) -> Watcher {
        let cache = self.dir().join("analysis-cache");
        let cache = cache.display().to_string();
        self.watch_with_env(&[], &[("OBSERVER_CACHE_DIR", cache.as_str())])
    }

    /// Starts a client directly (not under the observer).
    pub fn spawn_client(&self, client: &[String]) -> Proc {
        let mut command = Command::new(&client[0]);
        command.args(&client[1..]);
        self.client_env(&mut command);
        Proc::spawn(&format!("client {}", client[1..].join(" ")), command)
    }

    /// Starts the openai SDK's slow stream (an event every 250 ms for a minute), not under the
    /// observer, and waits for its first delta: the client and the stream's response id.
    pub fn start_slow_stream(&self) -> (Proc, String) {
        let client = self.spawn_client(&self.client("openai_calls.py", &["chat_stream_slow"]));
        let first = client
            .stdout
            .wait_for(Duration::from_secs(60), |l| {
                l.starts_with("first-delta id=")
            })
            .unwrap_or_else(|| panic!("the slow stream never started: {}", client.describe()));
        let response_id = first["first-delta id=".len()..].to_owned();
        (client, response_id)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "observer-e2e: kept the failed test's files in {}",
                dir.keep().display()
            );
        }
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}
