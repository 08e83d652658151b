//! Ollama's native API through the official ollama Python client (httpx): chat and generate,
//! streamed as NDJSON (by default) and whole, tool calls, embeddings, error bodies
//! (`{"error": "..."}`) and a stream cut off half-way.
//!
//! Over plaintext HTTP, as Ollama serves it (its bytes come from the socket syscalls), and over
//! TLS (a proxy in front of it).

use observer_e2e::{TestEnv, assert_plaintext_calls};

const SCENARIOS: &[&str] = &[
    "chat",
    "chat_stream",
    "chat_tool",
    "chat_tool_stream",
    "chat_stream_merge",
    "generate",
    "generate_stream",
    "embed",
    "chat_404",
    "chat_500",
    "chat_interrupted",
];

#[test]
fn ollama_client_over_plaintext_http() {
    let env = TestEnv::plaintext();
    let run = env.check_client("ollama_calls.py", SCENARIOS, false);
    assert_plaintext_calls(&run.spans, env.server.port);
}

#[test]
fn ollama_client_over_tls() {
    let env = TestEnv::new();
    env.check_client("ollama_calls.py", SCENARIOS, true);
}
