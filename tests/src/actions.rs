//! What agents did between their calls (tests/tests/e2e_actions.rs): the traces their runs
//! must give, checked on live runs and on their recordings (`tests/fixtures/actions`, replayed
//! without root by tests/tests/replay_fixtures.rs; saved by the live tests with
//! `OBSERVER_SAVE_FIXTURES=tests/fixtures`).
use std::{fs, path::PathBuf};

use serde_json::Value;

use crate::{ClientCall, ObserverRun, Span, mock::scenario};

/// A recorded agent run: the recording, and what the programs printed and the server served.
pub struct ActionFixture {
    pub recording: PathBuf,
    pub stdout: String,
    pub served: Vec<Value>,
}

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/actions")
        .join(name)
}

/// Saves `run` as fixture `name` when `OBSERVER_SAVE_FIXTURES` is set.
pub fn save(name: &str, run: &ObserverRun, served: &[Value]) {
    let Some(root) = std::env::var_os("OBSERVER_SAVE_FIXTURES").map(PathBuf::from) else {
        return;
    };
    let dir = root.join("actions").join(name);
    fs::create_dir_all(&dir).expect("creating the fixture directory");
    let record = run.record_file.as_ref().expect("fixture runs are recorded");
    fs::copy(record, dir.join("capture.rec")).expect("saving the recording");
    fs::write(dir.join("stdout.txt"), &run.stdout).expect("saving the programs' output");
    let served = serde_json::to_string(served).expect("served requests as JSON");
    fs::write(dir.join("served.json"), served).expect("saving the served requests");
}

/// The committed fixture `name`.
pub fn load(name: &str) -> ActionFixture {
    let dir = fixture_dir(name);
    let read = |file: &str| {
        fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("reading {}/{file}: {e}", dir.display()))
    };
    ActionFixture {
        recording: dir.join("capture.rec"),
        stdout: read("stdout.txt"),
        served: serde_json::from_str(&read("served.json")).expect("served.json is JSON"),
    }
}

/// The Claude Code CLI's `[bash]` run: call → execute_tool Bash → the shell's process → call,
/// with the tool call's id, the command, its exit code, and times inside the gap between the
/// calls. `served`: the mock's Messages requests.
pub fn check_bash_trace(spans: &[Span], served: &[Value]) {
    let calls: Vec<&Span> = spans.iter().filter(|s| s.is_call()).collect();
    let [ask, answer] = calls[..] else {
        panic!("two calls expected: {spans:#?}")
    };
    assert_eq!(
        ask.str("gen_ai.response.id"),
        served[0]["response_id"].as_str()
    );
    let tool_use_id = ask.output_tool_calls()[0]
        .id
        .clone()
        .expect("the tool call's id");
    let tool = one(spans, |s| s.str("name") == Some("execute_tool Bash"));
    assert_eq!(tool.str("gen_ai.tool.call.id"), Some(tool_use_id.as_str()));
    assert_eq!(tool.str("gen_ai.tool.name"), Some("Bash"));
    assert_eq!(tool.str("gen_ai.operation.name"), Some("execute_tool"));
    assert_eq!(tool.str("observer.link.reason"), Some("command_line"));
    let shell = one(spans, |s| {
        s.str("parent_span_id") == tool.str("span_id") && s.str("name") == Some("exec bash")
    });
    let args: Vec<&str> = shell
        .get("process.command_args")
        .and_then(Value::as_array)
        .expect("the shell's arguments")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.iter().any(|a| a.contains(scenario::BASH_COMMAND)),
        "the command the model asked for is in {args:?}"
    );
    assert_eq!(shell.u64("process.exit.code"), Some(3), "{shell:?}");
    assert_eq!(shell.str("error.type"), Some("3"));
    assert_eq!(shell.u64("process.parent_pid"), ask.u64("process.pid"));
    assert!(shell.u64("process.pid") != ask.u64("process.pid"));
    assert!(
        shell.str("process.working_directory").is_some(),
        "{shell:?}"
    );
    // call → tool → process → call, in one trace, and in time.
    let root = one(spans, |s| s.str("name") == Some("invoke_agent"));
    for span in [tool, shell, answer, root] {
        assert_eq!(span.str("trace_id"), ask.str("trace_id"), "{span:?}");
    }
    assert_eq!(tool.str("parent_span_id"), root.str("span_id"));
    assert_eq!(answer.str("parent_span_id"), root.str("span_id"));
    let start = |s: &Span| s.u64("start_time_unix_nano").unwrap_or_default();
    let end = |s: &Span| s.u64("end_time_unix_nano").unwrap_or_default();
    assert!(
        end(ask) <= start(shell) && start(shell) < end(shell) && end(shell) <= start(answer),
        "the command ran between the calls: {ask:?} {shell:?} {answer:?}"
    );
    // The tool spans what ran, not the whole gap.
    assert_eq!((start(tool), end(tool)), (start(shell), end(shell)));
}

/// The one span `pick` chooses.
fn one(spans: &[Span], pick: impl Fn(&Span) -> bool) -> &Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pick(s)).collect();
    match found[..] {
        [span] => span,
        _ => panic!("{} spans match, one expected: {spans:#?}", found.len()),
    }
}

/// The Claude Code CLI's `[mcp]` run, with the MCP server of tests/clients/mcp_server.py on
/// stdio (Bun gives it Unix socket pairs): call → execute_tool mcp__weather__lookup →
/// tools/call lookup → call, the session's other requests (initialize, tools/list) spans too.
pub fn check_claude_mcp_trace(spans: &[Span], served: &[Value]) {
    let calls: Vec<&Span> = spans.iter().filter(|s| s.is_call()).collect();
    let [ask, answer] = calls[..] else {
        panic!("two calls expected: {spans:#?}")
    };
    assert_eq!(
        ask.str("gen_ai.response.id"),
        served[0]["response_id"].as_str()
    );
    let asked = &ask.output_tool_calls()[0];
    let execute = one(spans, |s| {
        s.str("name") == Some("execute_tool mcp__weather__lookup")
    });
    let request = one(spans, |s| s.str("name") == Some("tools/call lookup"));
    assert_eq!(execute.str("gen_ai.tool.call.id"), asked.id.as_deref());
    assert_eq!(execute.str("observer.link.reason"), Some("mcp_tool_call"));
    assert_eq!(request.str("parent_span_id"), execute.str("span_id"));
    assert_eq!(request.str("network.transport"), Some("pipe"));
    assert_eq!(
        request.json("gen_ai.tool.call.arguments"),
        Some(asked.arguments.clone())
    );
    let result = request
        .json("gen_ai.tool.call.result")
        .expect("the tool's result");
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("found "), "{result}");
    for method in ["initialize", "tools/list"] {
        let span = one(spans, |s| s.str("mcp.method.name") == Some(method));
        assert!(span.str("mcp.protocol.version").is_some(), "{span:?}");
        assert_eq!(span.get("error.type"), None, "{span:?}");
    }
    let start = |s: &Span| s.u64("start_time_unix_nano").unwrap_or_default();
    let end = |s: &Span| s.u64("end_time_unix_nano").unwrap_or_default();
    assert!(end(ask) <= start(request) && end(request) <= start(answer));
    assert_eq!(answer.str("trace_id"), request.str("trace_id"));
}

/// The Python agent's MCP run (`mcp_agent.py`, whose output is `stdout`) over `transport`
/// (`tcp` or `pipe`): call → execute_tool lookup → tools/call lookup → call.
/// What the agent printed about its tool call: `tool {...}`.
fn tool_record(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tool "))
        .unwrap_or_else(|| panic!("the agent made no tool call:\n{stdout}"));
    serde_json::from_str(line).expect("the tool record is JSON")
}

pub fn check_mcp_trace(spans: &[Span], stdout: &str, transport: &str) {
    let tool = tool_record(stdout);
    let client_calls = ClientCall::parse_all(stdout);
    let calls: Vec<&Span> = spans.iter().filter(|s| s.is_call()).collect();
    let [ask, answer] = calls[..] else {
        panic!("two LLM calls expected: {spans:#?}")
    };
    assert_eq!(
        ask.str("gen_ai.response.id"),
        client_calls[0].0["id"].as_str()
    );
    let execute = one(spans, |s| s.str("name") == Some("execute_tool lookup"));
    let request = one(spans, |s| s.str("name") == Some("tools/call lookup"));
    assert_eq!(execute.str("gen_ai.tool.call.id"), tool["id"].as_str());
    assert_eq!(execute.str("observer.link.reason"), Some("mcp_tool_call"));
    assert_eq!(request.str("parent_span_id"), execute.str("span_id"));
    assert_eq!(request.str("kind"), Some("CLIENT"));
    assert_eq!(request.str("observer.link.reason"), Some("mcp_tool_call"));
    for (key, value) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "lookup"),
        ("gen_ai.operation.name", "execute_tool"),
        ("network.transport", transport),
    ] {
        assert_eq!(request.str(key), Some(value), "{key} in {request:?}");
    }
    assert!(request.str("jsonrpc.request.id").is_some(), "{request:?}");
    assert!(request.str("mcp.protocol.version").is_some(), "{request:?}");
    if transport == "tcp" {
        assert!(request.str("mcp.session.id").is_some(), "{request:?}");
    }
    assert_eq!(
        request.json("gen_ai.tool.call.arguments"),
        Some(tool["arguments"].clone())
    );
    let result = request
        .json("gen_ai.tool.call.result")
        .expect("the tool's result");
    assert_eq!(result["content"][0]["text"], tool["result"], "{result}");
    assert_eq!(request.get("error.type"), None);
    // The MCP session's other requests are spans too.
    for method in ["initialize", "tools/list"] {
        one(spans, |s| s.str("mcp.method.name") == Some(method));
    }
    // call → tool → MCP request → call, in one trace and in time.
    let root = one(spans, |s| s.str("name") == Some("invoke_agent"));
    for span in [execute, request, answer, root] {
        assert_eq!(span.str("trace_id"), ask.str("trace_id"), "{span:?}");
    }
    assert_eq!(execute.str("parent_span_id"), root.str("span_id"));
    let start = |s: &Span| s.u64("start_time_unix_nano").unwrap_or_default();
    let end = |s: &Span| s.u64("end_time_unix_nano").unwrap_or_default();
    assert!(end(ask) <= start(request) && end(request) <= start(answer));
    assert_eq!(
        (start(execute), end(execute)),
        (start(request), end(request))
    );
    // Inside the agent's own clock readings around the call (1 ms for the clocks' conversion).
    let (called, returned) = (
        tool["start"].as_u64().unwrap(),
        tool["end"].as_u64().unwrap(),
    );
    let slack = 1_000_000;
    assert!(
        called <= start(request) + slack && end(request) <= returned + slack,
        "agent saw {called}..{returned}, span {}..{}",
        start(request),
        end(request)
    );
}
