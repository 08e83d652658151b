//! What the syscall tracepoints add: plaintext HTTP (Ollama, vLLM and other local servers),
//! the socket and peer of every connection, and processes that come and go quickly.

use std::time::Duration;

use observer_e2e::{ClientCall, Span, TestEnv, assert_spans_match_calls};

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
        for span in &run.spans {
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
/// the span names the peer and the local end of the connection.
#[test]
fn tls_sessions_are_tied_to_their_sockets() {
    let env = TestEnv::new();
    let run = env.check_client("stdlib_calls.py", &["chat_json", "messages_json"], false);
    for span in &run.spans {
        assert_eq!(span.str("observer.tls.library"), Some("openssl"));
        assert_peer(span, env.server.port);
        assert_eq!(
            span.str("network.local.address"),
            Some("127.0.0.1"),
            "local address from procfs while the client runs: {span}"
        );
        assert!(span.u64("network.local.port").is_some(), "{span}");
    }
}

/// Watching the whole host: a plaintext client started after `ready` is captured, and the
/// server's side of the same connections (accepted sockets) is never copied or reported.
#[test]
fn whole_host_plaintext_client_and_no_server_side_spans() {
    let env = TestEnv::plaintext();
    let watcher = env.watch(&[]);
    let mut client =
        env.spawn_client(&env.client("stdlib_calls.py", &["chat_json", "messages_json"]));
    let status = client.wait(Duration::from_secs(60));
    assert!(status.success(), "client failed: {}", client.describe());
    let calls = ClientCall::parse_all(&client.stdout.text());
    assert_eq!(calls.len(), 2, "client output: {}", client.describe());
    let pid = u64::from(client.pid());
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans
            .iter()
            .filter(|s| s.u64("process.pid") == Some(pid))
            .count()
            >= 2
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    let on_mock_port: Vec<&Span> = run
        .spans
        .iter()
        .filter(|s| s.u64("server.port") == Some(u64::from(env.server.port)))
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
        let watcher = env.watch(&[]);
        let mut client = env.spawn_client(&env.client("curl_calls.py", &["chat_json"]));
        let status = client.wait(Duration::from_secs(60));
        assert!(status.success(), "client failed: {}", client.describe());
        let calls = ClientCall::parse_all(&client.stdout.text());
        assert_eq!(calls.len(), 1, "client output: {}", client.describe());
        let curl_pid = calls[0].pid();
        watcher.wait_for_spans(Duration::from_secs(20), |spans| {
            spans.iter().any(|s| s.u64("process.pid") == Some(curl_pid))
        });
        let run = watcher.stop(libc::SIGINT);
        run.assert_success();
        assert_spans_match_calls(&run.spans, &calls, env.server.port);
    }
}
