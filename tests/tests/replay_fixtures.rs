//! Replay tests (no root): each recorded session in `tests/fixtures` must give, through
//! `observer replay`, exactly the spans that agree with what its real client saw.
use observer_e2e::{Span, actions, assert_spans_match_calls, fixtures};
use serde_json::Value;

#[test]
fn every_recorded_session_replays_to_what_its_client_saw() {
    let fixtures = fixtures::all();
    assert!(!fixtures.is_empty(), "no fixtures under tests/fixtures");
    for fixture in fixtures {
        let scratch = tempfile::tempdir().expect("scratch directory");
        let spans = fixture.replay(scratch.path());
        eprintln!(
            "{}: {} calls, {} spans",
            fixture.dir.display(),
            fixture.calls.len(),
            spans.len()
        );
        assert_spans_match_calls(&spans, &fixture.calls, fixture.server_port);
    }
}

/// Every string a span holds, nested ones included.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn all_text(spans: &[Span]) -> String {
    let mut out = Vec::new();
    for span in spans {
        strings(&Value::Object(span.0.clone()), &mut out);
    }
    out.join("\n")
}

/// `--content redacted` keeps messages' shape with lengths and hashes, `--content none` keeps
/// no message at all, and in both no prompt or reply text is left; everything else (usage,
/// ids, fingerprint, cost) is as in `full`. Checked on every fixture.
#[test]
fn content_modes_keep_no_message_text() {
    for fixture in fixtures::all() {
        let scratch = tempfile::tempdir().expect("scratch directory");
        let full = fixture.replay(scratch.path());
        let texts: Vec<&str> = fixture
            .calls
            .iter()
            .flat_map(|c| [c.prompt(), c.text()])
            .filter(|t| t.len() > 8)
            .collect();
        for mode in ["redacted", "none"] {
            let spans = fixture.replay_with(scratch.path(), &["--content", mode]);
            assert_eq!(spans.len(), full.len(), "{}: {mode}", fixture.dir.display());
            let written = all_text(&spans);
            for text in &texts {
                assert!(
                    !written.contains(text),
                    "{} --content {mode}: {text:?} is still in the spans",
                    fixture.dir.display()
                );
            }
            for (span, whole) in spans.iter().zip(&full) {
                for key in [
                    "gen_ai.response.id",
                    "gen_ai.usage.input_tokens",
                    "gen_ai.usage.output_tokens",
                    "observer.prompt.fingerprint",
                    "observer.cost.usd",
                ] {
                    assert_eq!(
                        span.get(key),
                        whole.get(key),
                        "{key} changed with --content {mode}"
                    );
                }
                let messages = span.messages("gen_ai.input.messages");
                match mode {
                    "none" => {
                        assert!(messages.is_empty() && span.get("gen_ai.output.messages").is_none())
                    }
                    _ => assert_eq!(
                        messages.len(),
                        whole.messages("gen_ai.input.messages").len(),
                        "redacted messages keep their number"
                    ),
                }
            }
        }
    }
}

/// Recorded agent runs (tests/fixtures/actions, from tests/tests/e2e_actions.rs): each replays
/// to its whole trace, the commands and MCP requests in place.
#[test]
fn recorded_agent_runs_replay_to_their_traces() {
    let scratch = tempfile::tempdir().expect("scratch directory");
    let bash = actions::load("claude_code_bash");
    let spans = observer_e2e::harness::replay_recording(&bash.recording, scratch.path());
    actions::check_bash_trace(&spans, &bash.served);
    let claude_mcp = actions::load("claude_code_mcp");
    let spans = observer_e2e::harness::replay_recording(&claude_mcp.recording, scratch.path());
    actions::check_claude_mcp_trace(&spans, &claude_mcp.served);
    for (name, transport) in [("mcp_http", "tcp"), ("mcp_stdio", "pipe")] {
        let mcp = actions::load(name);
        let spans = observer_e2e::harness::replay_recording(&mcp.recording, scratch.path());
        actions::check_mcp_trace(&spans, &mcp.stdout, transport);
    }
    // Without content: commands keep their executable, MCP requests their method and tool.
    let spans = observer_e2e::harness::replay_recording_with(
        &bash.recording,
        scratch.path(),
        &["--content", "none"],
    );
    assert!(
        spans
            .iter()
            .any(|s| s.str("process.executable.name") == Some("bash"))
    );
    let written = all_text(&spans);
    assert!(
        !written.contains(observer_e2e::mock::scenario::BASH_COMMAND),
        "{written}"
    );
    let mcp = actions::load("mcp_stdio");
    let spans = observer_e2e::harness::replay_recording_with(
        &mcp.recording,
        scratch.path(),
        &["--content", "none"],
    );
    let request = spans
        .iter()
        .find(|s| s.str("name") == Some("tools/call lookup"))
        .expect("the MCP request");
    assert_eq!(request.get("gen_ai.tool.call.arguments"), None);
    assert_eq!(request.get("gen_ai.tool.call.result"), None);
}
