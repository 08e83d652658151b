//! What agents do between their LLM calls, as spans: the commands they run (the Claude Code
//! CLI's Bash tool), the MCP tools they call (the official Python `mcp` package, over stdio and
//! streamable HTTP), each in its run, under the tool call that asked for it.

use std::time::Duration;

use observer_e2e::{
    ObserverRun, TestEnv, actions,
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
    actions::check_bash_trace(&run.spans, &served);
    actions::check_bash_trace(&run.replay(env.dir()), &served);
    actions::save("claude_code_bash", &run, &served);
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
