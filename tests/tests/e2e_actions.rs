//! What agents do between their LLM calls, as spans: the commands they run (the Claude Code
//! CLI's Bash tool), the MCP tools they call (the official Python `mcp` package, over stdio and
//! streamable HTTP), the sub-agents they start, each in its run, under the tool call that asked
//! for it.

use std::time::Duration;

use observer_e2e::{
    Span, TestEnv, actions,
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
    let claude = ClaudeCode::new(&env);
    let run = env.capture_with(&[], &claude.env(), &claude.argv, true);
    claude.check_result(&run.stdout, &run.stderr);
    let served = messages_served(&env);
    actions::check_bash_trace(&run.spans, &served);
    actions::check_bash_trace(&run.replay(env.dir()), &served);
    actions::save("claude_code_bash", &run, &served);
}

/// The same under the whole-host watch: the CLI is found as it starts, its tree followed from
/// its first call.
#[test]
fn claude_code_bash_tool_under_the_whole_host_watch() {
    let env = TestEnv::new();
    let claude = ClaudeCode::new(&env);
    let watcher = env.watch(&[]);
    let mut command = std::process::Command::new(&claude.argv[0]);
    command.args(&claude.argv[1..]).envs(claude.env());
    let mut cli = Proc::spawn("claude", command);
    let status = cli.wait(Duration::from_secs(120));
    assert!(status.success(), "the CLI failed: {}", cli.describe());
    claude.check_result(&cli.stdout.text(), &cli.stderr.text());
    let served = messages_served(&env);
    // The run's root is written once the CLI has exited.
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans.iter().any(|s| s.str("name") == Some("invoke_agent"))
            && spans
                .iter()
                .any(|s| s.str("name") == Some("execute_tool Bash"))
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    // Other processes on the host may be traced too: the CLI's trace alone.
    let trace = run
        .spans
        .iter()
        .find(|s| s.str("gen_ai.response.id") == served[0]["response_id"].as_str())
        .and_then(|s| s.str("trace_id"))
        .unwrap_or_else(|| panic!("no span for the CLI's first call: {:#?}", run.spans));
    let spans: Vec<Span> = run
        .spans
        .iter()
        .filter(|s| s.str("trace_id") == Some(trace))
        .cloned()
        .collect();
    actions::check_bash_trace(&spans, &served);
}

/// `claude -p "… [mcp]"` with an MCP server on stdio (tests/clients/mcp_server.py): the mock
/// asks for its tool, `mcp__weather__lookup`.
#[test]
fn claude_code_mcp_tool_over_stdio() {
    let env = TestEnv::new();
    let mut claude = ClaudeCode::new(&env);
    let config = serde_json::json!({"mcpServers": {"weather": {
        "command": python().display().to_string(),
        "args": [clients_dir().join("mcp_server.py").display().to_string(), "stdio"],
    }}});
    let config_file = env.dir().join("mcp.json");
    std::fs::write(&config_file, config.to_string()).expect("the MCP configuration");
    claude.argv = [
        claude.argv[0].clone(),
        "-p".into(),
        format!("What is the weather in Paris {}", scenario::MCP),
        "--bare".into(),
        "--mcp-config".into(),
        config_file.display().to_string(),
        "--strict-mcp-config".into(),
        "--tools".into(),
        "".into(),
        "--allowedTools".into(),
        "mcp__weather__lookup".into(),
        "--model".into(),
        "claude-haiku-4-5".into(),
        "--output-format".into(),
        "json".into(),
    ]
    .into();
    let run = env.capture_with(&[], &claude.env(), &claude.argv, true);
    claude.check_result(&run.stdout, &run.stderr);
    let served = messages_served(&env);
    actions::check_claude_mcp_trace(&run.spans, &served);
    actions::check_claude_mcp_trace(&run.replay(env.dir()), &served);
    actions::save("claude_code_mcp", &run, &served);
}

/// The Messages requests the mock served.
fn messages_served(env: &TestEnv) -> Vec<Value> {
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
    served
}

/// `claude -p "Greet me [bash]"` with only its Bash tool, against the mock.
struct ClaudeCode {
    argv: Vec<String>,
    home: String,
    base: String,
    ca: String,
}

impl ClaudeCode {
    fn new(env: &TestEnv) -> ClaudeCode {
        let home = env.dir().join("home");
        std::fs::create_dir_all(&home).expect("home for the CLI");
        let argv = [
            npm_program(CLAUDE_CODE).display().to_string(),
            "-p".into(),
            format!("Greet me {}", scenario::BASH),
            "--bare".into(),
            "--tools".into(),
            "Bash".into(),
            "--allowedTools".into(),
            "Bash".into(),
            "--model".into(),
            "claude-haiku-4-5".into(),
            "--output-format".into(),
            "json".into(),
        ]
        .into();
        ClaudeCode {
            argv,
            home: home.display().to_string(),
            base: env.server.base_url(),
            ca: env.server.ca.display().to_string(),
        }
    }

    fn env(&self) -> [(&str, &str); 6] {
        [
            ("HOME", &self.home),
            ("ANTHROPIC_BASE_URL", &self.base),
            ("ANTHROPIC_API_KEY", observer_e2e::mock::CANARY_API_KEY),
            ("NODE_EXTRA_CA_CERTS", &self.ca),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ]
    }

    /// The CLI finished its turn without an error.
    fn check_result(&self, stdout: &str, stderr: &str) {
        let result: Value = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "result")
            .unwrap_or_else(|| panic!("the CLI printed no result:\n{stdout}\n{stderr}"));
        assert_eq!(result["is_error"], false, "{result}");
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
    actions::check_mcp_trace(&run.spans, &run.stdout, "tcp");
    actions::check_mcp_trace(&run.replay(env.dir()), &run.stdout, "tcp");
    actions::save("mcp_http", &run, &env.server.requests());
}

/// The same agent starting the server itself and talking to it over its pipes (stdio): the
/// pipes of an agent and of the server it started are read, no other pipe.
#[test]
fn python_agent_mcp_tool_over_stdio() {
    let env = TestEnv::new();
    let run = env.capture(&env.client("mcp_agent.py", &["stdio"]), true);
    actions::check_mcp_trace(&run.spans, &run.stdout, "pipe");
    actions::check_mcp_trace(&run.replay(env.dir()), &run.stdout, "pipe");
    actions::save("mcp_stdio", &run, &env.server.requests());
}

/// The stdio agent under the whole-host watch: Python is followed once it loads its TLS
/// library, and its MCP session (started before its first LLM call) is read from the start.
#[test]
fn python_agent_mcp_tool_over_stdio_under_the_whole_host_watch() {
    let env = TestEnv::new();
    let watcher = env.watch(&[]);
    let mut agent = env.spawn_client(&env.client("mcp_agent.py", &["stdio"]));
    let status = agent.wait(Duration::from_secs(120));
    assert!(status.success(), "the agent failed: {}", agent.describe());
    let stdout = agent.stdout.text();
    let first_id = observer_e2e::ClientCall::parse_all(&stdout)[0].0["id"].clone();
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans.iter().any(|s| s.str("name") == Some("invoke_agent"))
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    let pid = run
        .spans
        .iter()
        .find(|s| s.get("gen_ai.response.id") == Some(&first_id))
        .and_then(|s| s.u64("process.pid"))
        .unwrap_or_else(|| panic!("no span for the agent's first call: {:#?}", run.spans));
    let spans: Vec<Span> = run
        .spans
        .iter()
        .filter(|s| s.u64("process.pid") == Some(pid))
        .cloned()
        .collect();
    actions::check_mcp_trace(&spans, &stdout, "pipe");
}

/// A Python agent whose model asks it to run a program that is itself an agent
/// (tests/clients/sub_agent.py, `[subagent]`): the child's two calls are a run of their own, an
/// `invoke_agent` in the parent's trace under the command its `Bash` tool ran, inside the
/// tool's time; a replay of the recording gives the same.
#[test]
fn a_command_that_is_itself_an_agent_is_a_sub_agent_under_its_tool() {
    let env = TestEnv::new();
    let run = env.capture(&env.client("sub_agent.py", &["parent"]), true);
    check_sub_agent_trace(&run.spans, &run.stdout);
    check_sub_agent_trace(&run.replay(env.dir()), &run.stdout);
}

/// The same under the whole-host watch: the sub-agent, a new program started by the agent's
/// shell, is followed from its exec.
#[test]
fn a_sub_agent_under_the_whole_host_watch() {
    let env = TestEnv::new();
    let watcher = env.watch(&[]);
    let mut agent = env.spawn_client(&env.client("sub_agent.py", &["parent"]));
    let status = agent.wait(Duration::from_secs(120));
    assert!(status.success(), "the agent failed: {}", agent.describe());
    let stdout = agent.stdout.text();
    let first_id = observer_e2e::ClientCall::parse_all(&stdout)[0].0["id"].clone();
    // Both runs' roots are written once their processes have exited.
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        let trace = spans
            .iter()
            .find(|s| s.get("gen_ai.response.id") == Some(&first_id))
            .and_then(|s| s.str("trace_id"));
        let roots = spans
            .iter()
            .filter(|s| s.str("name") == Some("invoke_agent") && s.str("trace_id") == trace);
        trace.is_some() && roots.count() >= 2
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    // Other processes on the host may be traced too: the agent's trace alone.
    let trace = run
        .spans
        .iter()
        .find(|s| s.get("gen_ai.response.id") == Some(&first_id))
        .and_then(|s| s.str("trace_id"))
        .unwrap_or_else(|| panic!("no span for the agent's first call: {:#?}", run.spans));
    let spans: Vec<Span> = run
        .spans
        .iter()
        .filter(|s| s.str("trace_id") == Some(trace))
        .cloned()
        .collect();
    check_sub_agent_trace(&spans, &stdout);
}

fn check_sub_agent_trace(spans: &[Span], stdout: &str) {
    let printed = observer_e2e::ClientCall::parse_all(stdout);
    let ids = |role: &str| -> Vec<&str> {
        printed
            .iter()
            .filter(|c| c.name() == role)
            .filter_map(|c| c.0["id"].as_str())
            .collect()
    };
    let (parent_ids, child_ids) = (ids("parent"), ids("child"));
    assert_eq!((parent_ids.len(), child_ids.len()), (2, 2), "{stdout}");
    let by_id = |id: Option<&str>| {
        spans
            .iter()
            .find(|s| id.is_some() && s.str("span_id") == id)
            .unwrap_or_else(|| panic!("no span {id:?}: {spans:#?}"))
    };
    let call = |id: &str| {
        spans
            .iter()
            .find(|s| s.is_call() && s.str("gen_ai.response.id") == Some(id))
            .unwrap_or_else(|| panic!("no span for call {id}: {spans:#?}"))
    };
    let (ask, answer) = (call(parent_ids[0]), call(parent_ids[1]));
    // The run's root exists once its second call joins it.
    let root = by_id(answer.str("parent_span_id"));
    assert_eq!(root.str("name"), Some("invoke_agent"), "{root:?}");
    let tools: Vec<&Span> = spans
        .iter()
        .filter(|s| s.str("name") == Some("execute_tool Bash"))
        .collect();
    let [tool] = tools[..] else {
        panic!("one execute_tool Bash expected: {spans:#?}")
    };
    assert_eq!(tool.str("parent_span_id"), root.str("span_id"));
    assert_eq!(tool.str("observer.link.reason"), Some("command_line"));
    assert_eq!(
        tool.str("gen_ai.tool.call.id"),
        ask.output_tool_calls()[0].id.as_deref()
    );
    let time = |s: &Span| {
        (
            s.u64("start_time_unix_nano").unwrap_or_default(),
            s.u64("end_time_unix_nano").unwrap_or_default(),
        )
    };
    let mut sub_roots = Vec::new();
    for id in child_ids {
        let child = call(id);
        assert_eq!(child.str("trace_id"), ask.str("trace_id"), "{child:?}");
        let sub_root = by_id(child.str("parent_span_id"));
        assert_eq!(sub_root.str("name"), Some("invoke_agent"), "{sub_root:?}");
        assert_ne!(sub_root.str("span_id"), root.str("span_id"));
        assert_eq!(
            sub_root.str("observer.link.reason"),
            Some("child_process"),
            "{sub_root:?}"
        );
        // The sub-agent's run hangs, through the processes the tool started, from the tool.
        let mut ancestor = sub_root;
        while ancestor.str("span_id") != tool.str("span_id") {
            assert!(
                ancestor.str("span_id") != root.str("span_id"),
                "the sub-agent's run is not under the tool: {spans:#?}"
            );
            ancestor = by_id(ancestor.str("parent_span_id"));
        }
        let ((tool_start, tool_end), (start, end)) = (time(tool), time(child));
        assert!(
            tool_start <= start && end <= tool_end,
            "the sub-agent's call ran inside the tool: {tool:?} {child:?}"
        );
        sub_roots.push(sub_root.str("span_id"));
    }
    assert_eq!(
        sub_roots[0], sub_roots[1],
        "one run for the sub-agent's conversation"
    );
}
