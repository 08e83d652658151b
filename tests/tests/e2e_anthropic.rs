//! Anthropic Messages calls through the official anthropic SDK under `observer capture`.

use observer_e2e::TestEnv;

/// One SDK client, all on one kept-alive connection: JSON, stream (message_start /
/// content_block_* / ping / message_delta / message_stop), tool_use as JSON and streamed as
/// input_json_delta fragments, a stream whose events are split across writes, one whose
/// events all arrive in one write, a stream over 64 KiB, and a 429 with max_retries=0.
#[test]
fn anthropic_sdk_messages() {
    let env = TestEnv::new();
    let run = env.check_client(
        "anthropic_calls.py",
        &[
            "messages_json",
            "messages_stream",
            "tool_use_json",
            "tool_use_stream",
            "messages_stream_split",
            "messages_stream_merge",
            "messages_stream_big",
            "messages_429",
        ],
        false,
    );
    let conns = env.connections(&run.calls);
    let first = conns[0];
    assert!(
        first.is_some() && conns.iter().flatten().all(|c| Some(*c) == first),
        "test setup: the anthropic calls were meant to share one connection, server saw {conns:?}"
    );
}
