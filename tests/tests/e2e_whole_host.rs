//! The whole-host watch (the fleet daemon's mode) meeting programs it has never seen: each is a
//! fresh copy (a new inode) started after `ready` and calling at once, and the observer starts
//! with an empty analysis cache, so nothing about the program is known before its `execve`.
//! Also: what the watch costs is bounded (a stopped observer holds an exec once, by the bound;
//! a busy process without LLM calls stops being followed, a process that makes them does not).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use observer_e2e::{
    ClientCall, TestEnv, assert_spans_match_calls,
    go_client::{Build, build_client},
    harness::{clients_dir, npm_program, python},
};

const BUN: &str = "@oven/bun-linux-x64/bin/bun";

/// Runs `client` while the host is watched; every call it reports must have its span.
fn first_calls_captured(env: &TestEnv, client: &[String], extra_env: &[(&str, &str)]) {
    let watcher = env.watch_unseen();
    let mut command = Command::new(&client[0]);
    command
        .args(&client[1..])
        .env("MOCK_BASE", env.server.base_url())
        .env("MOCK_CA", &env.server.ca)
        .env("MOCK_API_KEY", observer_e2e::mock::CANARY_API_KEY)
        .envs(extra_env.iter().copied());
    let mut proc = observer_e2e::harness::Proc::spawn("fresh client", command);
    let status = proc.wait(Duration::from_secs(90));
    assert!(status.success(), "client failed: {}", proc.describe());
    let calls = ClientCall::parse_all(&proc.stdout.text());
    assert!(
        !calls.is_empty(),
        "the client made no call: {}",
        proc.describe()
    );
    let pids: Vec<u64> = calls.iter().map(ClientCall::pid).collect();
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans
            .iter()
            .filter(|s| s.is_call() && s.u64("process.pid").is_some_and(|p| pids.contains(&p)))
            .count()
            >= calls.len()
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    // Shown with a failure: how the observer followed the client.
    println!("--- observer stderr ---\n{}", run.stderr);
    assert_spans_match_calls(&run.spans, &calls, env.server.port);
}

/// A batch client opening 800 TLS connections at once, every handshake before any request: its
/// first costly windows carry no call, and it must not be dropped for them (every call captured).
#[test]
fn a_batch_client_opening_hundreds_of_connections_at_once_is_followed() {
    let env = TestEnv::new();
    let client = [
        python().display().to_string(),
        clients_dir().join("batch_calls.py").display().to_string(),
    ];
    first_calls_captured(&env, &client, &[]);
}

/// A Go client never seen before (stripped: functions from `.gopclntab`), HTTP/2, its first
/// calls made the moment it starts.
#[test]
fn a_fresh_go_binary_is_followed_from_its_first_call() {
    let env = TestEnv::new();
    let client = env.fresh_copy(&build_client(Build::Stripped));
    let argv = [
        client.display().to_string(),
        "http2".into(),
        "chat_json".into(),
        "chat_stream".into(),
    ];
    first_calls_captured(&env, &argv, &[]);
}

/// Bun (stripped BoringSSL, found by code signature: the slowest analysis) never seen before.
#[test]
fn a_fresh_bun_is_followed_from_its_first_call() {
    let env = TestEnv::new();
    let bun = env.fresh_copy(&npm_program(BUN));
    let argv = [
        bun.display().to_string(),
        clients_dir().join("bun_calls.js").display().to_string(),
        "chat_json".into(),
        "chat_sse".into(),
    ];
    first_calls_captured(&env, &argv, &[]);
}

/// The official static build of Node (OpenSSL inside the executable) never seen before.
#[test]
fn a_fresh_static_node_is_followed_from_its_first_call() {
    let env = TestEnv::new();
    let venv = python()
        .parent()
        .and_then(Path::parent)
        .expect("the venv of the test clients")
        .to_path_buf();
    let node = std::fs::read_dir(venv.join("lib"))
        .expect("the venv's lib directory")
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/nodejs/bin/node"))
        .find(|node| node.is_file())
        .expect("nodejs-bin's node in the test venv (tests/requirements.txt)");
    let node = env.fresh_copy(&node);
    let argv = [
        node.display().to_string(),
        clients_dir().join("bun_calls.js").display().to_string(),
        "chat_json".into(),
        "chat_sse".into(),
    ];
    let ca = env.server.ca.display().to_string();
    first_calls_captured(&env, &argv, &[("NODE_EXTRA_CA_CERTS", ca.as_str())]);
}

/// Streamed and JSON calls, one after another on kept-alive connections, made by Debian's node
/// running `script` from the moment it starts (issue: streams cut short under the whole-host
/// watch, later calls of the process lost): every call, each stream whole.
fn node_calls_made_at_once(script: &str, extra_env: &[(&str, &str)]) {
    let env = TestEnv::new();
    let mut argv = vec![
        "/usr/bin/node".to_string(),
        clients_dir().join(script).display().to_string(),
    ];
    let scenarios = [
        "chat_sse",
        "chat_json",
        "chat_sse",
        "chat_json",
        "messages_sse",
        "messages_json",
    ];
    argv.extend(scenarios.iter().map(|s| s.to_string()));
    let ca = env.server.ca.display().to_string();
    let mut client_env = vec![("NODE_EXTRA_CA_CERTS", ca.as_str())];
    client_env.extend_from_slice(extra_env);
    first_calls_captured(&env, &argv, &client_env);
}

#[test]
fn node_fetch_streams_and_json_calls_made_at_once_are_all_captured() {
    node_calls_made_at_once("bun_calls.js", &[]);
}

/// The official OpenAI and Anthropic Node SDKs (the Anthropic calls on a connection of their
/// own).
#[test]
fn node_sdk_streams_and_json_calls_made_at_once_are_all_captured() {
    let package = npm_program("openai/package.json");
    let modules = package
        .parent()
        .and_then(Path::parent)
        .expect("node_modules");
    let modules = modules.display().to_string();
    node_calls_made_at_once("node_sdk_calls.mjs", &[("NPM_MODULES", modules.as_str())]);
}

/// A TLS library loaded late from a file never seen before: Python imports `ssl` from a fresh
/// copy of libssl (LD_LIBRARY_PATH) and calls at once.
#[test]
fn a_fresh_tls_library_loaded_late_is_followed_from_its_first_call() {
    let env = TestEnv::new();
    let system = Path::new("/usr/lib/x86_64-linux-gnu");
    let mut private = None;
    for name in ["libssl.so.3", "libcrypto.so.3"] {
        private = Some(env.fresh_copy(&system.join(name)));
    }
    let private_dir = private
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the private copies' directory");
    let script = clients_dir().join("stdlib_calls.py");
    let argv = [
        python().display().to_string(),
        script.display().to_string(),
        "chat_json".into(),
        "messages_json".into(),
    ];
    let library_path = private_dir.display().to_string();
    first_calls_captured(&env, &argv, &[("LD_LIBRARY_PATH", library_path.as_str())]);
}

/// How long `/bin/true` takes to run, start to exit.
fn exec_time() -> Duration {
    let start = Instant::now();
    let status = Command::new("/bin/true").status().expect("run /bin/true");
    assert!(status.success());
    start.elapsed()
}

/// A stopped observer (SIGSTOP) holds the host's next exec no longer than the bound (1 s), and
/// later ones not at all; resumed, it captures again.
#[test]
fn a_stopped_observer_does_not_hold_execs_past_the_bound() {
    let env = TestEnv::new();
    let watcher = env.watch_unseen();
    assert!(
        exec_time() < Duration::from_millis(500),
        "an exec with the observer running"
    );
    // SAFETY: signalling the observer we started.
    unsafe { libc::kill(watcher.pid() as i32, libc::SIGSTOP) };
    let first = exec_time();
    let later: Vec<Duration> = (0..5).map(|_| exec_time()).collect();
    // SAFETY: as above.
    unsafe { libc::kill(watcher.pid() as i32, libc::SIGCONT) };
    assert!(
        first < Duration::from_millis(1500),
        "the first exec while the observer was stopped took {first:?} (bound 1 s)"
    );
    assert!(
        later.iter().all(|t| *t < Duration::from_millis(200)),
        "later execs while the observer was stopped: {later:?}"
    );
    let mut client = env.spawn_client(&env.client("stdlib_calls.py", &["chat_json"]));
    assert!(
        client.wait(Duration::from_secs(60)).success(),
        "{}",
        client.describe()
    );
    let calls = ClientCall::parse_all(&client.stdout.text());
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans.iter().any(|s| s.is_call())
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    assert_spans_match_calls(&run.spans, &calls, env.server.port);
}

/// A Python process that makes thousands of non-LLM requests in a burst is no longer followed
/// (it costs more than its budget without an LLM call); its LLM call to a peer it had not talked
/// to yet brings it back.
#[test]
fn a_costly_process_is_dropped_and_followed_again_for_a_new_peer() {
    let env = TestEnv::new();
    // A second server (its own certificates): the new peer.
    let second_dir = env.dir().join("second-server");
    std::fs::create_dir_all(&second_dir).expect("second server's directory");
    let second = observer_e2e::harness::MockServer::start(&second_dir, false, None);
    let watcher = env.watch_unseen();
    let script = r#"
import http.client, json, os, ssl, sys, time
sys.path.insert(0, os.environ["CLIENTS"])
from common import API_KEY, emit, ssl_context
first = http.client.HTTPSConnection("127.0.0.1", int(os.environ["FIRST_PORT"]), context=ssl_context())
for _ in range(3000):
    first.request("GET", "/files/0")
    first.getresponse().read()
print("burst done", flush=True)
time.sleep(2.5)
second = http.client.HTTPSConnection("127.0.0.1", int(os.environ["SECOND_PORT"]), context=ssl.create_default_context(cafile=os.environ["SECOND_CA"]))
# A real peer is a network away: a round trip at least before the first request. On loopback a
# call sent within milliseconds of the connect can be lost (README: following again).
second.connect()
time.sleep(0.1)
prompt = "after the burst"
second.request("POST", "/v1/chat/completions", body=json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}),
               headers={"content-type": "application/json", "authorization": "Bearer " + API_KEY})
response = second.getresponse()
body = json.loads(response.read())
choice = body["choices"][0]
emit("chat_json", path="/v1/chat/completions", model="gpt-4o", prompt=prompt, stream=False,
     status=response.status, response_id=body["id"], response_model=body["model"],
     text=choice["message"]["content"], tool_calls=[], finish_reason=choice["finish_reason"],
     input_tokens=body["usage"]["prompt_tokens"], output_tokens=body["usage"]["completion_tokens"])
"#;
    let mut command = Command::new(python());
    command
        .args(["-c", script])
        .env("CLIENTS", clients_dir())
        .env("FIRST_PORT", env.server.port.to_string())
        .env("SECOND_PORT", second.port.to_string())
        .env("MOCK_BASE", second.base_url())
        .env("MOCK_CA", &env.server.ca)
        .env("SECOND_CA", &second.ca)
        .env("MOCK_API_KEY", observer_e2e::mock::CANARY_API_KEY);
    let mut proc = observer_e2e::harness::Proc::spawn("bursting client", command);
    assert!(
        proc.wait(Duration::from_secs(120)).success(),
        "{}",
        proc.describe()
    );
    let calls = ClientCall::parse_all(&proc.stdout.text());
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans.iter().any(|s| s.is_call())
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    let pid = proc.pid();
    println!("--- observer stderr ---\n{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&format!("stopped following pid {pid} "))),
        "the burst did not stop the following of pid {pid}:\n{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&format!("following pid {pid} ")) && l.contains("again")),
        "pid {pid} was not followed again for its new peer:\n{}",
        run.stderr
    );
    assert_spans_match_calls(&run.spans, &calls, second.port);
}

/// A process already running when the watch starts, in the middle of reading a long streamed
/// answer on a kept-alive connection: the watch joins that connection mid-stream, says so in its
/// summary, and follows the calls made on it afterwards.
#[test]
fn a_connection_joined_mid_stream_is_counted_and_its_next_calls_captured() {
    let env = TestEnv::new();
    let resume = env.dir().join("resume");
    let client = env.client(
        "stdlib_calls.py",
        &["big_stream_paused", "chat_json", "messages_json"],
    );
    let mut command = Command::new(&client[0]);
    command.args(&client[1..]).env("RESUME_FILE", &resume);
    env.client_env(&mut command);
    let mut proc = observer_e2e::harness::Proc::spawn("paused client", command);
    proc.stdout
        .wait_for(Duration::from_secs(30), |l| l == "paused")
        .unwrap_or_else(|| panic!("the client never paused: {}", proc.describe()));
    let watcher = env.watch_unseen();
    std::fs::write(&resume, b"").expect("resume file");
    let status = proc.wait(Duration::from_secs(60));
    assert!(status.success(), "client failed: {}", proc.describe());
    let calls = ClientCall::parse_all(&proc.stdout.text());
    assert_eq!(calls.len(), 2, "{}", proc.describe());
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans.iter().filter(|s| s.is_call()).count() >= calls.len()
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    println!("--- observer stderr ---\n{}", run.stderr);
    assert_spans_match_calls(&run.spans, &calls, env.server.port);
    let given_up = run
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("given up:"))
        .unwrap_or_else(|| panic!("no `given up` line in the summary:\n{}", run.stderr));
    for expected in [
        "connections joined mid-stream: 1",
        "processes followed with connections already open: ",
        "bytes skipped to find a message start: ",
    ] {
        assert!(
            given_up.contains(expected),
            "{expected:?} not in {given_up:?}"
        );
    }
}
