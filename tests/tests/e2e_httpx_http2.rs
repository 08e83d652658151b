//! Python httpx with `http2=True` (under the openai SDK): every call a stream on one
//! multiplexed HTTP/2 connection, some of them at once from several threads, JSON and SSE,
//! chat, tools, the Responses API, embeddings and a 429. Each stream must be its own span.

use observer_e2e::{TestEnv, assert_spans_match_calls};

const SCENARIOS: &[&str] = &[
    "chat_json",
    "chat_stream_usage",
    "chat_stream_no_usage",
    "chat_tool_stream",
    "responses_stream",
    "embeddings",
    "chat_429",
    "parallel4:chat_stream_usage",
];

#[test]
fn httpx_http2_multiplexed_calls() {
    let env = TestEnv::new();
    let mut client = vec!["/usr/bin/env".to_owned(), "OPENAI_HTTP2=1".to_owned()];
    client.extend(env.client("openai_calls.py", SCENARIOS));
    let run = env.capture(&client, false);
    assert_eq!(
        run.calls.len(),
        SCENARIOS.len() - 1 + 4,
        "client output:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let served = env.server.requests();
    assert!(
        !served.is_empty() && served.iter().all(|r| r["version"] == "h2"),
        "test setup: httpx was meant to speak HTTP/2, the server saw {served:?}"
    );
    let connections: std::collections::HashSet<u64> =
        served.iter().filter_map(|r| r["conn"].as_u64()).collect();
    assert!(
        connections.len() < served.len(),
        "test setup: httpx was meant to multiplex calls on a connection, the server saw {served:?}"
    );
    for call in &run.calls {
        call.assert_consistent_with_mock();
    }
    assert_spans_match_calls(&run.spans, &run.calls, env.server.port);
}
