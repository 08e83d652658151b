//! Python httpx with `http2=True` (under the openai SDK): every call a stream on one
//! multiplexed HTTP/2 connection, some of them at once from several threads, JSON and SSE,
//! chat, tools, the Responses API, embeddings and a 429. Each stream must be its own span.

use observer_e2e::TestEnv;

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
    env.check_client_with_env("openai_calls.py", SCENARIOS, &["OPENAI_HTTP2=1"], false);
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
}
