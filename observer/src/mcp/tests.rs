//! MCP requests over streamable HTTP and stdio, and what hostile input must not do.
use serde_json::json;

use super::*;
use crate::capture::{Chunk, ConnKey, Direction as Flow, Unfollowed};
use crate::llm::tests::support::{REQUEST_END, RESPONSE_DELAY, json_exchange, post, sse_exchange};

fn tool_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "lookup", "arguments": {"query": "weather", "limit": 3}}})
}

fn with_session(mut exchange: Exchange) -> Exchange {
    exchange.request.headers.0.extend([
        ("Mcp-Session-Id".into(), "sess-1".into()),
        ("MCP-Protocol-Version".into(), "2025-06-18".into()),
    ]);
    exchange
}

#[test]
fn a_tool_call_answered_in_json_is_one_execute_tool_span() {
    let result = json!({"content": [{"type": "text", "text": "18C"}], "isError": false});
    let exchange = with_session(json_exchange(
        "127.0.0.1:8000",
        "/mcp",
        &tool_call(7),
        200,
        &json!({"jsonrpc": "2.0", "id": 7, "result": result}),
    ));
    assert!(is_mcp_request(&exchange.request));
    let [call] = &recognise(&exchange)[..] else {
        panic!("one call")
    };
    assert_eq!(call.tool_name(), Some("lookup"));
    assert_eq!(call.id.as_deref(), Some("7"));
    assert_eq!(call.result.as_ref(), Some(&result));
    assert_eq!(call.start, exchange.request.ts_start);
    assert_eq!(
        call.end,
        exchange.response.as_ref().map(|r| r.ts_end).unwrap()
    );
    let span = call.span(&ProcessInfo::default(), None, 42, ContentMode::Full);
    assert_eq!(span.name, "tools/call lookup");
    assert_eq!(span.kind, SpanKind::Client);
    assert_eq!(span.gen_ai.operation.as_deref(), Some("execute_tool"));
    assert_eq!(span.gen_ai.error_type, None);
    for (key, value) in [
        (attr::MCP_METHOD_NAME, json!("tools/call")),
        (attr::TOOL_NAME, json!("lookup")),
        (attr::JSONRPC_REQUEST_ID, json!("7")),
        (attr::MCP_SESSION_ID, json!("sess-1")),
        (attr::MCP_PROTOCOL_VERSION, json!("2025-06-18")),
        (attr::NETWORK_TRANSPORT, json!("tcp")),
        (
            attr::TOOL_CALL_ARGUMENTS,
            json!({"query": "weather", "limit": 3}),
        ),
        (attr::TOOL_CALL_RESULT, result.clone()),
    ] {
        assert_eq!(span.attribute(key), Some(&value), "{key}");
    }
    // Arguments and results are content.
    let metadata = call.span(&ProcessInfo::default(), None, 42, ContentMode::Redacted);
    assert_eq!(metadata.attribute(attr::TOOL_CALL_ARGUMENTS), None);
    assert_eq!(metadata.attribute(attr::TOOL_CALL_RESULT), None);
}

#[test]
fn a_response_streamed_as_events_pairs_by_id_and_errors_are_error_types() {
    let stream = concat!(
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"a\",\"error\":{\"code\":-32602,\"message\":\"Unknown tool\"}}\n\n",
    );
    let request = json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call",
        "params": {"name": "nope", "arguments": {}}});
    let [call] = &recognise(&sse_exchange("h", "/mcp", &request, stream))[..] else {
        panic!("one call")
    };
    assert_eq!(call.error, Some((-32602, "Unknown tool".to_owned())));
    // Ended when its own event arrived (the second part of the body).
    assert!(call.end > REQUEST_END + RESPONSE_DELAY);
    let span = call.span(&ProcessInfo::default(), None, 1, ContentMode::Full);
    assert_eq!(span.gen_ai.error_type.as_deref(), Some("-32602"));

    let failed = json!({"jsonrpc": "2.0", "id": 1,
        "result": {"content": [{"type": "text", "text": "boom"}], "isError": true}});
    let calls = recognise(&json_exchange("h", "/mcp", &tool_call(1), 200, &failed));
    let span = calls[0].span(&ProcessInfo::default(), None, 1, ContentMode::None);
    assert_eq!(span.gen_ai.error_type.as_deref(), Some("tool_error"));
}

#[test]
fn notifications_batches_and_other_methods() {
    let batch = json!([
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "file:///a.txt"}},
    ]);
    let mut exchange = post("h", "/mcp", &batch);
    exchange = crate::llm::tests::support::answer(
        exchange,
        200,
        "application/json",
        crate::llm::tests::support::whole_body(
            &json!([{"jsonrpc": "2.0", "id": 2, "result": {"contents": []}}]).to_string(),
        ),
    );
    let calls = recognise(&exchange);
    let names: Vec<String> = calls
        .iter()
        .map(|c| {
            c.span(&ProcessInfo::default(), None, 1, ContentMode::Full)
                .name
        })
        .collect();
    assert_eq!(
        names,
        ["notifications/initialized", "resources/read file:///a.txt"]
    );
    assert_eq!(calls[0].id, None);
    let read = calls[1].span(&ProcessInfo::default(), None, 1, ContentMode::Full);
    assert_eq!(
        read.attribute(attr::MCP_RESOURCE_URI),
        Some(&json!("file:///a.txt"))
    );
    assert_eq!(
        read.gen_ai.operation, None,
        "only tools/call executes a tool"
    );
}

#[test]
fn json_rpc_that_is_not_mcp_and_other_posts_are_not_claimed() {
    let ethereum = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"});
    let exchange = json_exchange(
        "h",
        "/",
        &ethereum,
        200,
        &json!({"jsonrpc": "2.0", "id": 1}),
    );
    assert!(!is_mcp_request(&exchange.request));
    assert!(recognise(&exchange).is_empty());
    let chat = json!({"model": "gpt-4o", "messages": []});
    assert!(!is_mcp_request(
        &post("h", "/v1/chat/completions", &chat).request
    ));
}

fn pipe_chunk(conn: u64, dir: Flow, offset: u64, ts: u64, data: &str) -> Chunk {
    Chunk {
        conn: ConnKey { pid: 42, conn },
        tid: 42,
        dir,
        ts,
        offset,
        data: bytes::Bytes::copy_from_slice(data.as_bytes()),
        truncated_after: false,
        library: crate::capture::TlsLibrary::Pipe,
    }
}

#[test]
fn a_stdio_session_pairs_across_its_two_pipes_and_reports_what_never_came_back() {
    let mut stage = StdioStage::default();
    let (to_server, from_server) = (1, 2);
    stage.pipe(
        ConnKey {
            pid: 42,
            conn: to_server,
        },
        Some(77),
    );
    stage.pipe(
        ConnKey {
            pid: 42,
            conn: from_server,
        },
        Some(77),
    );
    let mut out = Vec::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18"}});
    let sent = format!("{initialize}\n{}\n", tool_call(1));
    // A write cut in two reads' worth of chunks.
    let (a, b) = sent.split_at(30);
    stage.chunk(&pipe_chunk(to_server, Flow::Egress, 0, 10, a), &mut out);
    stage.chunk(&pipe_chunk(to_server, Flow::Egress, 30, 10, b), &mut out);
    assert!(out.is_empty());
    let answers = concat!(
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-03-26\"}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":99,\"result\":{}}\n",
    );
    stage.chunk(
        &pipe_chunk(from_server, Flow::Ingress, 0, 20, answers),
        &mut out,
    );
    let [initialized] = &out[..] else {
        panic!("the initialize answered: {out:?}")
    };
    assert_eq!((initialized.start, initialized.end), (10, 20));
    assert_eq!(initialized.protocol_version.as_deref(), Some("2025-03-26"));
    assert!(
        stage
            .pipe_ended(
                &ConnKey {
                    pid: 42,
                    conn: to_server
                },
                25
            )
            .is_empty()
    );
    let left = stage.pipe_ended(
        &ConnKey {
            pid: 42,
            conn: from_server,
        },
        30,
    );
    let [unanswered] = &left[..] else {
        panic!("the tool call never answered: {left:?}")
    };
    assert!(unanswered.unanswered);
    assert_eq!(unanswered.end, 30);
    let span = unanswered.span(&ProcessInfo::default(), None, 1, ContentMode::Full);
    assert_eq!(
        span.attribute(attr::NETWORK_TRANSPORT),
        Some(&json!("pipe"))
    );
    assert_eq!(span.gen_ai.error_type.as_deref(), Some("unanswered"));
    assert!(stage.take_unfollowed().is_empty());
}

#[test]
fn pipes_that_are_not_json_rpc_and_hostile_lines_are_let_go() {
    let mut stage = StdioStage::default();
    let mut out = Vec::new();
    // Node's IPC: JSON, not JSON-RPC.
    stage.chunk(
        &pipe_chunk(5, Flow::Egress, 0, 1, "{\"cmd\":\"NODE_HANDLE\"}\n"),
        &mut out,
    );
    assert_eq!(
        stage.take_unfollowed(),
        [Unfollowed::Connection(ConnKey { pid: 42, conn: 5 })]
    );
    assert_eq!(
        stage.stats.unreadable_lines, 0,
        "a pipe that is not MCP loses nothing"
    );
    // A JSON-RPC pipe: garbage, deep nesting and a gap later cost a line each, never a panic.
    stage.chunk(
        &pipe_chunk(6, Flow::Egress, 0, 1, &format!("{}\n", tool_call(3))),
        &mut out,
    );
    let deep = format!("{}\n\u{ff}\n", "[".repeat(100_000));
    stage.chunk(&pipe_chunk(6, Flow::Egress, 1_000, 2, &deep), &mut out);
    assert!(out.is_empty());
    assert_eq!(stage.stats.gaps, 1);
    assert!(
        stage.take_unfollowed().is_empty(),
        "it spoke JSON-RPC first"
    );
    // The server's side of a session (a followed server writes JSON-RPC too): let go.
    let response = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n";
    stage.chunk(&pipe_chunk(7, Flow::Egress, 0, 1, response), &mut out);
    assert_eq!(
        stage.take_unfollowed(),
        [Unfollowed::Connection(ConnKey { pid: 42, conn: 7 })]
    );
}

#[test]
fn a_flood_of_unanswered_requests_stays_bounded() {
    let mut session = Session::default();
    let mut out = Vec::new();
    for id in 0..(MAX_PENDING as u64 + 100) {
        session.message(Direction::Sent, id, &tool_call(id), &mut out);
    }
    assert_eq!(session.pending.len(), MAX_PENDING);
    assert_eq!(session.dropped, 100);
    assert!(out.is_empty());
}
