//! `observer capture` without a command: watching the whole host, and stopping on SIGINT.

use std::time::Duration;

use observer_e2e::{Span, TestEnv, assert_spans_match_calls, mock};

/// With no filter the observer watches every process: a client started after `ready` (and
/// not a child of the observer) is captured. Only that client's spans are looked at.
#[test]
fn watch_whole_host_captures_a_client_started_after_ready() {
    let env = TestEnv::new();
    let (run, calls) =
        env.watch_host_while(&env.client("stdlib_calls.py", &["chat_json", "messages_json"]));
    assert_eq!(calls.len(), 2, "client output: {}", run.stdout);
    assert_spans_match_calls(&run.spans, &calls, env.server.port);
}

/// SIGINT while a slow stream is in flight: the observer flushes, exits 0, and the open call
/// becomes a span marked incomplete (error.type set) carrying what had arrived so far.
#[test]
fn sigint_with_a_stream_in_flight_yields_an_incomplete_span() {
    let env = TestEnv::new();
    let python_comm: String = observer_e2e::harness::python()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let watcher = env.watch(&["--comm", &python_comm]);
    let (client, response_id) = env.start_slow_stream();
    // Let a few more events arrive (the server sends one every 250 ms for a minute).
    std::thread::sleep(Duration::from_millis(800));
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    let client_pid = u64::from(client.pid());
    drop(client);

    let spans: Vec<&Span> = run
        .spans
        .iter()
        .filter(|s| s.str("gen_ai.response.id") == Some(response_id.as_str()))
        .collect();
    let [span] = spans.as_slice() else {
        panic!(
            "expected exactly one span for the in-flight stream {response_id}, got {}:\n{}",
            spans.len(),
            spans
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    let mut problems = Vec::new();
    if span.str("error.type").is_none_or(str::is_empty) {
        problems.push("error.type: expected set on a span cut short by SIGINT".to_owned());
    }
    for (key, want) in [
        ("gen_ai.request.model", serde_json::json!("gpt-4o")),
        ("gen_ai.request.stream", serde_json::json!(true)),
        ("http.response.status_code", serde_json::json!(200)),
        ("gen_ai.provider.name", serde_json::json!("openai")),
    ] {
        if span.get(key) != Some(&want) {
            problems.push(format!("{key}: expected {want}, got {:?}", span.get(key)));
        }
    }
    for key in ["process.pid", "thread.id"] {
        if span.u64(key) != Some(client_pid) {
            problems.push(format!(
                "{key}: expected the client's pid (its main thread) {client_pid}, got {:?}",
                span.get(key)
            ));
        }
    }
    let text = span.output_text();
    let prompt = "chat_stream_slow: a slow answer [slow]";
    let full = mock::reply_text(prompt);
    if text.is_empty() || !full.starts_with(&text) || text == full {
        problems.push(format!(
            "output text: expected a non-empty strict prefix of the full reply, got {text:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "incomplete span problems:\n  - {}\nspan: {span}",
        problems.join("\n  - ")
    );
}
