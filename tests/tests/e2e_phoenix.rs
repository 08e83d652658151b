//! OTLP export into a real backend: Arize Phoenix (from PyPI, tests/requirements-phoenix.txt)
//! started on loopback by the test. The observer exports a conversation and a tool round trip
//! from the real openai SDK; Phoenix's REST API must then show each call as an LLM span with
//! its model and token counts, in its agent run's trace. Recorded agent runs (a Claude Code
//! Bash tool, an MCP tool over stdio) replayed into it must show their tools as TOOL spans,
//! with the command and the MCP request under them.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use observer_e2e::{
    TestEnv, actions,
    harness::{Proc, free_port, http_get, phoenix, replay_recording_with},
};
use serde_json::Value;

/// Phoenix takes about a minute and a half to start on a busy two-core machine.
const PHOENIX_START_TIMEOUT: Duration = Duration::from_secs(300);
/// Exported spans are batched for up to 2 s, then ingested by Phoenix.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(90);

struct Phoenix {
    port: u16,
    proc: Proc,
}

impl Phoenix {
    fn start(dir: &Path) -> Phoenix {
        let port = free_port();
        let mut command = Command::new(phoenix());
        command
            .arg("serve")
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", free_port().to_string())
            .env("PHOENIX_WORKING_DIR", dir)
            // Loopback only: no usage reporting to the outside.
            .env("PHOENIX_TELEMETRY_ENABLED", "false");
        let proc = Proc::spawn("phoenix serve", command);
        let deadline = Instant::now() + PHOENIX_START_TIMEOUT;
        while http_get(port, "/healthz").is_none_or(|(status, _)| status != 200) {
            assert!(
                Instant::now() < deadline,
                "Phoenix did not come up within {PHOENIX_START_TIMEOUT:?}: {}",
                proc.describe()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Phoenix { port, proc }
    }

    /// Every span of the default project.
    fn spans(&self) -> Vec<Value> {
        let Some((200, body)) = http_get(self.port, "/v1/projects/default/spans?limit=1000") else {
            return Vec::new();
        };
        let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
        parsed["data"].as_array().cloned().unwrap_or_default()
    }
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn context<'a>(span: &'a Value, key: &str) -> &'a str {
    span["context"][key].as_str().unwrap_or_default()
}

#[test]
fn spans_arrive_in_phoenix_as_llm_spans_with_model_and_tokens() {
    let env = TestEnv::new();
    let phoenix = Phoenix::start(&env.dir().join("phoenix"));
    let endpoint = format!("http://127.0.0.1:{}", phoenix.port);
    let run = env.capture_with(
        &["--otlp-endpoint", &endpoint],
        &[],
        &env.client("linking_calls.py", &["conversation", "tool_round_trip"]),
        false,
    );
    run.assert_success();
    assert_eq!(run.calls.len(), 6, "client output:\n{}", run.stdout);

    let response_ids: Vec<&str> = run.calls.iter().filter_map(|c| c.response_id()).collect();
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    let spans = loop {
        let spans = phoenix.spans();
        let arrived = response_ids.iter().all(|id| {
            spans
                .iter()
                .any(|s| attribute(s, "gen_ai.response.id").as_str() == Some(id))
        });
        if arrived && spans.iter().any(|s| s["span_kind"] == "TOOL") {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the spans did not all reach Phoenix within {ARRIVAL_TIMEOUT:?}; it has {} spans: {spans:#?}\nobserver stderr:\n{}\nphoenix: {}",
            spans.len(),
            run.stderr,
            phoenix.proc.describe()
        );
        std::thread::sleep(Duration::from_secs(1));
    };

    let mut under_agents = 0;
    for call in &run.calls {
        let id = call.response_id().unwrap();
        let span = spans
            .iter()
            .find(|s| attribute(s, "gen_ai.response.id").as_str() == Some(id))
            .unwrap();
        assert_eq!(span["span_kind"], "LLM", "{span:#}");
        let model = attribute(span, "llm.model_name")
            .as_str()
            .unwrap_or_default();
        assert!(model.starts_with(call.model()), "model {model:?}: {span:#}");
        let input = call.input_tokens().expect("the client saw input tokens");
        let output = call.output_tokens().expect("the client saw output tokens");
        assert_eq!(
            attribute(span, "llm.token_count.prompt").as_u64(),
            Some(input)
        );
        assert_eq!(
            attribute(span, "llm.token_count.completion").as_u64(),
            Some(output)
        );
        assert_eq!(
            attribute(span, "llm.token_count.total").as_u64(),
            Some(input + output)
        );
        // A run's first call is a root; the later ones are under the run's AGENT span, of the
        // same trace, in Phoenix too.
        let Some(parent) = span["parent_id"].as_str() else {
            continue;
        };
        under_agents += 1;
        let root = spans
            .iter()
            .find(|s| context(s, "span_id") == parent)
            .unwrap_or_else(|| panic!("the run's root {parent} is not in Phoenix"));
        assert_eq!(root["span_kind"], "AGENT");
        assert_eq!(context(root, "trace_id"), context(span, "trace_id"));
    }
    assert!(under_agents > 0, "no call under an AGENT span: {spans:#?}");
    // The conversation's four turns are one trace; the tool round trip another, with its tool.
    let trace_of = |conversation: &str| -> Vec<&str> {
        let mut traces: Vec<&str> = run
            .calls
            .iter()
            .filter(|c| c.0["conversation"] == conversation)
            .map(|c| {
                let span = spans
                    .iter()
                    .find(|s| attribute(s, "gen_ai.response.id").as_str() == c.response_id())
                    .unwrap();
                context(span, "trace_id")
            })
            .collect();
        traces.dedup();
        traces
    };
    let conversation = trace_of("conversation");
    let tools = trace_of("tool_round_trip");
    assert_eq!(conversation.len(), 1, "one trace for the conversation");
    assert_eq!(tools.len(), 1, "one trace for the tool round trip");
    assert_ne!(conversation, tools);
    let tool = spans.iter().find(|s| s["span_kind"] == "TOOL").unwrap();
    assert_eq!(context(tool, "trace_id"), tools[0]);
    assert_eq!(tool["name"], "execute_tool get_weather");

    // Agent runs, replayed from their recordings into the same Phoenix.
    for fixture in ["claude_code_bash", "mcp_stdio"] {
        let recording = actions::load(fixture).recording;
        replay_recording_with(&recording, env.dir(), &["--otlp-endpoint", &endpoint]);
    }
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    let named = |spans: &[Value], name: &str| -> Option<Value> {
        spans.iter().find(|s| s["name"] == name).cloned()
    };
    let spans = loop {
        let spans = phoenix.spans();
        if named(&spans, "tools/call lookup").is_some()
            && spans
                .iter()
                .any(|s| attribute(s, "process.exit.code").as_u64() == Some(3))
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the agent runs did not reach Phoenix within {ARRIVAL_TIMEOUT:?}: {spans:#?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let bash = named(&spans, "execute_tool Bash").expect("the Bash tool's span");
    assert_eq!(bash["span_kind"], "TOOL", "{bash:#}");
    let shell = spans
        .iter()
        .find(|s| attribute(s, "process.exit.code").as_u64() == Some(3))
        .unwrap();
    assert_eq!(shell["parent_id"].as_str(), Some(context(&bash, "span_id")));
    assert!(
        attribute(shell, "process.command_args").is_array(),
        "{shell:#}"
    );
    let lookup = named(&spans, "execute_tool lookup").expect("the MCP tool's span");
    let request = named(&spans, "tools/call lookup").unwrap();
    assert_eq!(lookup["span_kind"], "TOOL");
    assert_eq!(request["span_kind"], "TOOL");
    assert_eq!(
        request["parent_id"].as_str(),
        Some(context(&lookup, "span_id"))
    );
}
