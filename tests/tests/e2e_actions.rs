//! What agents do between their LLM calls, as spans: the commands they run (the Claude Code
//! CLI's Bash tool), the MCP tools they call (the official Python `mcp` package, over stdio and
//! streamable HTTP), each in its run, under the tool call that asked for it.

use std::time::Duration;

use observer_e2e::{
    ObserverRun, Span, TestEnv,
    harness::{Proc, clients_dir, free_port, npm_program, python},
    mock::scenario,
};
use serde_json::Value;

const CLAUDE_CODE: &str = "@anthropic-ai/claude-code-linux-x64/claude";

/// `claude -p` with its Bash tool against the mock, whose answer asks for `Bash` with
/// `echo …; exit 3`, then answers once the tool's result comes back. The trace must read
/// call → execute_tool Bash → the shell's process → call, with the tool call's id, the command,
/// its exit code and times inside the gap between the calls; a replay of the recording gives
/// the same.
#[test]
fn claude_code_bash_tool_is_a_command_under_its_tool_span() {
    let env = TestEnv::new();
    let run = run_claude_code(&env, &format!("Greet me {}", scenario::BASH), "Bash");
    let served: Vec<Value> = env
        .server
        .requests()
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/v1/messages"))
        })
        .collect();
    assert_eq!(served.len(), 2, "ask, then answer: {served:?}");
    check_bash_trace(&run.spans, &served);
    check_bash_trace(&run.replay(env.dir()), &served);
}

fn run_claude_code(env: &TestEnv, prompt: &str, tools: &str) -> ObserverRun {
    let home = env.dir().join("home");
    std::fs::create_dir_all(&home).expect("home for the CLI");
    let argv: Vec<String> = [
        npm_program(CLAUDE_CODE).display().to_string(),
        "-p".into(),
        prompt.into(),
        "--bare".into(),
        "--tools".into(),
        tools.into(),
        "--allowedTools".into(),
        tools.into(),
        "--model".into(),
        "claude-haiku-4-5".into(),
        "--output-format".into(),
        "json".into(),
    ]
    .into();
    let base = env.server.base_url();
    let ca = env.server.ca.display().to_string();
    let home = home.display().to_string();
    let run = env.capture_with(
        &[],
        &[
            ("HOME", home.as_str()),
            ("ANTHROPIC_BASE_URL", base.as_str()),
            ("ANTHROPIC_API_KEY", observer_e2e::mock::CANARY_API_KEY),
            ("NODE_EXTRA_CA_CERTS", ca.as_str()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
        &argv,
        true,
    );
    let result: Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("the CLI printed no result:\n{}\n{}", run.stdout, run.stderr));
    assert_eq!(result["is_error"], false, "{result}");
    run
}

fn check_bash_trace(spans: &[Span], served: &[Value]) {
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

/// A Python agent (openai SDK against the mock, `mcp` package's client) calls the `lookup` tool
/// of an MCP server over streamable HTTP: the model's tool call becomes the real
/// `execute_tool lookup` span over the `tools/call lookup` request, between the two calls.
#[test]
fn python_agent_mcp_tool_over_streamable_http() {
    let env = TestEnv::new();
    let port = free_port();
    let mut command = std::process::Command::new(python());
    command
        .arg(clients_dir().join("mcp_server.py"))
        .args(["http", &port.to_string()]);
    let server = Proc::spawn("MCP server", command);
    server
        .stderr
        .wait_for(Duration::from_secs(30), |l| l.contains("Uvicorn running"))
        .unwrap_or_else(|| panic!("the MCP server did not start: {}", server.describe()));
    let url = format!("http://127.0.0.1:{port}/mcp");
    let run = env.capture(&env.client("mcp_agent.py", &["http", &url]), true);
    check_mcp_trace(&run, "tcp");
    let replayed = ObserverRun {
        spans: run.replay(env.dir()),
        ..run
    };
    check_mcp_trace(&replayed, "tcp");
}

/// The same agent starting the server itself and talking to it over its pipes (stdio): the
/// pipes of an agent and of the server it started are read, no other pipe.
#[test]
fn python_agent_mcp_tool_over_stdio() {
    let env = TestEnv::new();
    let run = env.capture(&env.client("mcp_agent.py", &["stdio"]), true);
    check_mcp_trace(&run, "pipe");
    let replayed = ObserverRun {
        spans: run.replay(env.dir()),
        ..run
    };
    check_mcp_trace(&replayed, "pipe");
}

/// What the agent printed about its tool call: `tool {...}`.
fn tool_record(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tool "))
        .unwrap_or_else(|| panic!("the agent made no tool call:\n{stdout}"));
    serde_json::from_str(line).expect("the tool record is JSON")
}

fn check_mcp_trace(run: &ObserverRun, transport: &str) {
    let spans = &run.spans;
    let tool = tool_record(&run.stdout);
    let calls: Vec<&Span> = spans.iter().filter(|s| s.is_call()).collect();
    let [ask, answer] = calls[..] else {
        panic!("two LLM calls expected: {spans:#?}")
    };
    assert_eq!(ask.str("gen_ai.response.id"), run.calls[0].0["id"].as_str());
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
