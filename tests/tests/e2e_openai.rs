//! OpenAI-format calls from curl, Python's standard library and the official openai SDK, each
//! client run under `observer capture -- CLIENT` (command mode).

use observer_e2e::{TestEnv, assert_same_spans};

/// curl (OpenSSL): chat JSON and SSE, Anthropic JSON and SSE, and a request body over 100 KiB
/// that curl writes in several SSL_write calls. One curl process per call.
#[test]
fn curl_json_sse_and_big_request_body() {
    let env = TestEnv::new();
    let run = env.check_client(
        "curl_calls.py",
        &[
            "chat_json",
            "chat_sse",
            "messages_json",
            "messages_sse",
            "chat_big_body",
        ],
        false,
    );
    let big = run
        .calls
        .iter()
        .find(|c| c.name() == "chat_big_body")
        .unwrap();
    let served = env.server.requests();
    let request = served
        .iter()
        .find(|r| r["response_id"] == big.response_id().unwrap())
        .expect("server saw the big request");
    assert!(
        request["request_bytes"].as_u64().unwrap() > 100 * 1024,
        "the big request body was not over 100 KiB: {request}"
    );
}

/// Python's http.client: three calls (OpenAI, Anthropic, OpenAI) on one kept-alive connection;
/// each must be its own span.
#[test]
fn python_stdlib_calls_on_one_kept_alive_connection() {
    let env = TestEnv::new();
    let run = env.check_client(
        "stdlib_calls.py",
        &["chat_json", "messages_json", "chat_json"],
        false,
    );
    let conns = env.connections(&run.calls);
    assert!(
        conns[0].is_some() && conns.iter().all(|c| *c == conns[0]),
        "test setup: the stdlib calls were meant to share one connection, server saw {conns:?}"
    );
}

/// The openai SDK, one client for all calls: chat JSON, chat stream with and without
/// `include_usage`, tool calls (JSON and streamed in argument fragments), the Responses API
/// (JSON and SSE with event lines), embeddings, legacy completions (JSON and stream), several
/// of them on one kept-alive connection.
#[test]
fn openai_sdk_all_apis() {
    let env = TestEnv::new();
    let run = env.check_client(
        "openai_calls.py",
        &[
            "chat_json",
            "chat_stream_usage",
            "chat_stream_no_usage",
            "chat_tool_json",
            "chat_tool_stream",
            "responses_json",
            "responses_stream",
            "embeddings",
            "completions_json",
            "completions_stream",
        ],
        false,
    );
    let conns = env.connections(&run.calls);
    let shared = conns
        .iter()
        .flatten()
        .any(|c| conns.iter().flatten().filter(|d| *d == c).count() > 1);
    assert!(
        shared,
        "test setup: expected the SDK to reuse a kept-alive connection, server saw {conns:?}"
    );
}

/// `observer capture --record FILE` then `observer replay FILE`: the replay (no probes) must
/// give the same spans as the live capture, and the recording must not hold the API key.
#[test]
fn record_then_replay_gives_the_same_spans() {
    let env = TestEnv::new();
    let client = env.client(
        "openai_calls.py",
        &[
            "chat_json",
            "chat_tool_stream",
            "responses_stream",
            "embeddings",
        ],
    );
    let run = env.capture(&client, true);
    assert_eq!(run.calls.len(), 4, "client output:\n{}", run.stdout);
    let pid = run.calls[0].pid() as u32;
    assert!(
        run.spans_of(pid).len() >= 4,
        "the live capture has too few spans to compare: {}",
        run.spans.len()
    );
    let replayed = run.replay(env.dir());
    assert_same_spans(&run.spans, &replayed);
}
