//! Transport edge cases and concurrency, through the openai SDK under `observer capture`.

use std::collections::HashSet;

use observer_e2e::TestEnv;
use observer_e2e::mock::BIG_REPLY_MIN_BYTES;

/// A 429 (max_retries=0), SSE events split across TLS writes, several SSE events merged into
/// one write, a streamed reply over 64 KiB, a request body over 100 KiB, and a gzip-compressed
/// JSON response.
#[test]
fn openai_sdk_transport_edge_cases() {
    let env = TestEnv::new();
    let run = env.check_client(
        "openai_calls.py",
        &[
            "chat_429",
            "chat_stream_split",
            "chat_stream_merge",
            "chat_stream_big",
            "chat_big_request",
            "chat_json_gzip",
        ],
        false,
    );
    let big = run
        .calls
        .iter()
        .find(|c| c.name() == "chat_stream_big")
        .unwrap();
    assert!(big.text().len() >= BIG_REPLY_MIN_BYTES);
}

/// 8 threads of one process call at once through one shared SDK client, first 8 streams, then
/// 8 JSON calls: 16 spans, each with the thread id of the thread that made it, none merged.
#[test]
fn eight_threads_calling_at_once() {
    let env = TestEnv::new();
    let run = env.check_client(
        "openai_calls.py",
        &["parallel8:chat_stream_usage", "parallel8:chat_json"],
        false,
    );
    for kind in ["chat_stream_usage#", "chat_json#"] {
        let tids: HashSet<u64> = run
            .calls
            .iter()
            .filter(|c| c.name().starts_with(kind))
            .map(|c| c.tid())
            .collect();
        assert_eq!(
            tids.len(),
            8,
            "test setup: expected 8 distinct threads for {kind}"
        );
    }
}
