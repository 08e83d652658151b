//! TLS stacks without OpenSSL's exported functions: Bun (and the Bun-compiled Claude Code CLI),
//! whose stripped BoringSSL is found by code signature, and rustls, found by Rust symbol name.

use observer_e2e::{
    TestEnv,
    harness::{built_program, clients_dir, npm_program},
};
use serde_json::Value;

// The platform packages' executables: the `bun` and `@anthropic-ai/claude-code` packages only
// copy them into place in install scripts, which the tests' npm install does not run.
const BUN: &str = "@oven/bun-linux-x64/bin/bun";
const CLAUDE_CODE: &str = "@anthropic-ai/claude-code-linux-x64/claude";

/// Bun's fetch (stripped BoringSSL in the bun executable): OpenAI and Anthropic calls, JSON and
/// SSE, one process on kept-alive connections. Every span must match what the client saw, come
/// from Bun's HTTP thread, and name BoringSSL.
#[test]
fn bun_fetch_over_stripped_boringssl() {
    let env = TestEnv::new();
    let scenarios = ["chat_json", "chat_sse", "messages_json", "messages_sse"];
    let mut argv = vec![
        npm_program(BUN).display().to_string(),
        clients_dir().join("bun_calls.js").display().to_string(),
    ];
    argv.extend(scenarios.iter().map(|s| s.to_string()));
    let run = env.check_command(&argv, observer_e2e::expected_calls(&scenarios), false);
    let calls: Vec<_> = run.spans.iter().filter(|s| s.is_call()).collect();
    assert_eq!(calls.len(), scenarios.len(), "{:?}", run.spans);
    for span in calls {
        assert_eq!(
            span.str("observer.tls.library"),
            Some("boringssl"),
            "{span:?}"
        );
        assert_eq!(span.str("process.executable.name"), Some("bun"), "{span:?}");
    }
    assert_located_by_signature(&run.stderr, "bun");
}

/// The Claude Code CLI from npm is a Bun-compiled executable (another Bun build, with its own
/// BoringSSL): `claude -p` against the mock server gives one span equal to what the CLI reports.
#[test]
fn claude_code_cli_over_stripped_boringssl() {
    let env = TestEnv::new();
    let home = env.dir().join("home");
    std::fs::create_dir_all(&home).expect("home for the CLI");
    let argv: Vec<String> = [
        npm_program(CLAUDE_CODE).display().to_string(),
        "-p".into(),
        "say hi".into(),
        "--bare".into(),
        // No tools: the mock would answer a tool list with a tool call, and the CLI would loop.
        "--tools".into(),
        "".into(),
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
        false,
    );
    let result: Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("the CLI printed no result:\n{}\n{}", run.stdout, run.stderr));
    assert_eq!(result["is_error"], false, "{result}");
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
    assert_eq!(
        served.len(),
        1,
        "the CLI made one Messages call: {served:?}"
    );
    let calls: Vec<_> = run.spans.iter().filter(|s| s.is_call()).collect();
    assert_eq!(calls.len(), 1, "{:?}", run.spans);
    let span = calls[0];
    let expect = |key: &str, value: Value| {
        assert_eq!(span.get(key), Some(&value), "{key} in {span:?}");
    };
    expect("gen_ai.provider.name", "anthropic".into());
    expect("gen_ai.request.model", "claude-haiku-4-5".into());
    expect("gen_ai.response.id", served[0]["response_id"].clone());
    expect(
        "gen_ai.usage.input_tokens",
        result["usage"]["input_tokens"].clone(),
    );
    expect(
        "gen_ai.usage.output_tokens",
        result["usage"]["output_tokens"].clone(),
    );
    expect(
        "gen_ai.response.finish_reasons",
        serde_json::json!([result["stop_reason"]]),
    );
    expect("url.path", "/v1/messages".into());
    expect("server.port", env.server.port.into());
    expect("http.response.status_code", 200.into());
    expect("process.executable.name", "claude".into());
    expect("observer.tls.library", "boringssl".into());
    let text =
        span.get("gen_ai.output.messages").expect("output messages")[0]["parts"][0]["content"]
            .clone();
    assert_eq!(text, result["result"], "output text in {span:?}");
    assert_located_by_signature(&run.stderr, "claude");
}

/// The observer says how it found the functions.
fn assert_located_by_signature(stderr: &str, exe: &str) {
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("attached boringssl probes")
                && l.contains(exe)
                && l.contains("without symbols, by code signature")
                && l.contains("cross-checked")),
        "no log line saying how {exe}'s BoringSSL was found:\n{stderr}"
    );
}

/// reqwest over rustls, a Rust client with symbols (tests/rustls-client): OpenAI and Anthropic
/// calls, JSON and streamed, on one kept-alive connection. hyper hands rustls vectored writes
/// (headers and body as separate chunks), so the probes' chunk walk is exercised too.
#[test]
fn reqwest_over_rustls_with_symbols() {
    let env = TestEnv::new();
    let scenarios = [
        "chat_json",
        "chat_stream",
        "messages_json",
        "messages_stream",
    ];
    let client = built_program(
        "rustls-client",
        "build it first: cargo build --release -p rustls-client (cargo xtask test does)",
    );
    let mut argv = vec![client.display().to_string()];
    argv.extend(scenarios.iter().map(|s| s.to_string()));
    let run = env.check_command(&argv, observer_e2e::expected_calls(&scenarios), false);
    let calls: Vec<_> = run.spans.iter().filter(|s| s.is_call()).collect();
    assert_eq!(calls.len(), scenarios.len(), "{:?}", run.spans);
    for span in calls {
        assert_eq!(span.str("observer.tls.library"), Some("rustls"), "{span:?}");
    }
    let conns = env.connections(&run.calls);
    assert!(
        conns[0].is_some() && conns.iter().all(|c| *c == conns[0]),
        "test setup: reqwest was meant to reuse one connection, server saw {conns:?}"
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("attached rustls probes")
                && l.contains("rustls-client")
                && l.contains("found by symbol")),
        "no log line about rustls-client's rustls:\n{}",
        run.stderr
    );
}
