//! Ollama's native API through the official ollama Python client (httpx): chat and generate,
//! streamed as NDJSON (by default) and whole, tool calls, embeddings, error bodies
//! (`{"error": "..."}`) and a stream cut off half-way.
//!
//! The client talks TLS to the mock server today; with `OLLAMA_BASE=http://...` it talks to a
//! plaintext server the same way (Ollama's own setup), for when plain HTTP is captured.

use observer_e2e::TestEnv;

#[test]
fn ollama_client_chat_generate_embed_and_errors() {
    let env = TestEnv::new();
    env.check_client(
        "ollama_calls.py",
        &[
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
        ],
        true,
    );
}
