//! What the syscall tracepoints add: plaintext HTTP (Ollama, vLLM and other local servers),
//! the socket and peer of every connection, and processes that come and go quickly.

use observer_e2e::{Span, TestEnv, assert_spans_match_calls};

fn assert_peer(span: &Span, port: u16) {
    assert_eq!(
        span.str("network.peer.address"),
        Some("127.0.0.1"),
        "peer address from the socket: {span}"
    );
    assert_eq!(
        span.u64("network.peer.port"),
        Some(u64::from(port)),
        "peer port from the socket: {span}"
    );
}

/// Plaintext HTTP/1.1 from three kinds of client (Python's http.client on one kept-alive
/// connection, curl, the OpenAI SDK over httpx): every call is a span, checked field by field,
/// marked plaintext, with the peer from the connect() the kernel saw.
#[test]
fn plaintext_http_clients() {
    let env = TestEnv::plaintext();
    let port = env.server.port;
    for (script, scenarios) in [
        ("stdlib_calls.py", &["chat_json", "messages_json"][..]),
        (
            "curl_calls.py",
            &["chat_json", "chat_sse", "messages_sse"][..],
        ),
        (
            "openai_calls.py",
            &["chat_json", "chat_stream_usage", "chat_tool_stream"][..],
        ),
    ] {
        let run = env.check_client(script, scenarios, false);
        for span in run.spans.iter().filter(|s| s.is_call()) {
            assert_eq!(
                span.str("observer.tls.library"),
                Some("plaintext"),
                "{script}: {span}"
            );
            assert_peer(span, port);
        }
    }
}

/// A TLS session is tied to its socket by the read or write it makes inside SSL_read/SSL_write:
/// the span names the peer (and the local end, when procfs still shows it).
#[test]
fn tls_sessions_are_tied_to_their_sockets() {
    let env = TestEnv::new();
    let run = env.check_client("stdlib_calls.py", &["chat_json", "messages_json"], false);
    for span in run.spans.iter().filter(|s| s.is_call()) {
        assert_eq!(span.str("observer.tls.library"), Some("openssl"));
        assert_peer(span, env.server.port);
        // The local end is read from procfs, so only while the client is still running: best
        // effort on a loaded machine, but never wrong.
        if let Some(local) = span.str("network.local.address") {
            assert_eq!(local, "127.0.0.1", "{span}");
            assert!(span.u64("network.local.port").is_some(), "{span}");
        }
    }
}

/// Watching the whole host: a plaintext client started after `ready` is captured, and the
/// server's side of the same connections (accepted sockets) is never copied or reported.
#[test]
fn whole_host_plaintext_client_and_no_server_side_spans() {
    let env = TestEnv::plaintext();
    let (run, calls) =
        env.watch_host_while(&env.client("stdlib_calls.py", &["chat_json", "messages_json"]));
    assert_eq!(calls.len(), 2, "client output: {}", run.stdout);
    let pid = calls[0].pid();
    let on_mock_port: Vec<&Span> = run
        .spans
        .iter()
        .filter(|s| s.is_call() && s.u64("server.port") == Some(u64::from(env.server.port)))
        .collect();
    assert!(
        on_mock_port
            .iter()
            .all(|s| s.u64("process.pid") == Some(pid)),
        "only the client reports these calls, never the server: {on_mock_port:?}"
    );
    assert_spans_match_calls(&run.spans, &calls, env.server.port);
}

/// A curl that lives a few tens of milliseconds, started after the observer is ready, over TLS
/// and over plaintext: both calls are captured from the first byte.
#[test]
fn short_lived_processes_started_after_ready() {
    for env in [TestEnv::new as fn() -> TestEnv, TestEnv::plaintext] {
        // One at a time: each environment holds the tests' serial lock.
        let env = env();
        let (run, calls) = env.watch_host_while(&env.client("curl_calls.py", &["chat_json"]));
        assert_eq!(calls.len(), 1, "client output: {}", run.stdout);
        assert_spans_match_calls(&run.spans, &calls, env.server.port);
    }
}

/// A network namespace made for one test, deleted when dropped.
struct NetworkNamespace(String);

impl NetworkNamespace {
    fn create() -> NetworkNamespace {
        let name = format!("observer-e2e-{}", std::process::id());
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("run ip (iproute2)");
            assert!(status.success(), "ip {args:?} failed");
        };
        ip(&["netns", "add", &name]);
        let namespace = NetworkNamespace(name);
        ip(&["-n", &namespace.0, "link", "set", "lo", "up"]);
        namespace
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// A process in its own network namespace that loads its own copy of libssl (another file,
/// another path) only when it imports `ssl`, after the observer is watching the whole host:
/// the late mapping is found (executable mmap → immediate scan) and attached.
#[test]
fn own_libssl_copy_in_a_network_namespace() {
    let netns = NetworkNamespace::create();
    let env = TestEnv::in_network_namespace(&netns.0);
    let libssl = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .expect("system library directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libssl.so.3"))
        })
        .expect("the system libssl.so.3");
    let private = env.dir().join("private-lib");
    std::fs::create_dir_all(&private).expect("create the private library directory");
    std::fs::copy(&libssl, private.join("libssl.so.3")).expect("copy libssl");

    let mut argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &netns.0,
        "env",
        &format!("LD_LIBRARY_PATH={}", private.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The client loads its libssl (import ssl), then gives discovery a moment before its first
    // call: a call racing the attach by milliseconds is a known limit (README), not the point.
    let script = observer_e2e::harness::clients_dir().join("stdlib_calls.py");
    argv.extend([
        observer_e2e::harness::python().display().to_string(),
        "-c".to_string(),
        "import runpy, ssl, sys, time; time.sleep(1); sys.argv = sys.argv[1:]; \
         sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0]); \
         runpy.run_path(sys.argv[0], run_name='__main__')"
            .to_string(),
        script.display().to_string(),
        "chat_json".to_string(),
        "messages_json".to_string(),
    ]);
    let (run, calls) = env.watch_host_while(&argv);
    assert_eq!(calls.len(), 2, "client output: {}", run.stdout);
    assert!(
        run.stderr.contains(&private.display().to_string()),
        "the observer attached to the private copy of libssl: {}",
        run.stderr
    );
    assert_spans_match_calls(&run.spans, &calls, env.server.port);
}
