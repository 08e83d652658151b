//! rustls without symbols, located by code shape (observer/src/capture/rustls): the Codex CLI
//! from npm (a static musl executable, stripped, LTO; a streamed POST /v1/responses over
//! HTTP/2) and the workspace's reqwest client built the same way (profile `stripped-lto`).
//! Each under the whole-host watch and as `observer capture -- CMD`.

use observer_e2e::{
    ClientCall, ObserverRun, Span, TestEnv, assert_spans_match_calls, expected_calls,
    harness::{npm_program, profile_program},
    mock::{self, CANARY_API_KEY},
};
use std::path::Path;

use serde_json::{Value, json};

/// The executable of the Codex CLI's platform package (the `@openai/codex` package's launcher
/// only finds it and runs it).
const CODEX: &str = "@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex";
const MODEL: &str = "gpt-5-mini";
const PROMPT: &str = "say hello";

/// `codex exec --json PROMPT` against the mock server, in a home and a `CODEX_HOME` of its own
/// (a config naming the mock as its provider), as an argument vector run through `env`; the
/// executable at `codex`.
fn codex_exec(env: &TestEnv, codex: &Path) -> Vec<String> {
    let home = env.dir().join("home");
    let codex_home = env.dir().join("codex-home");
    for dir in [&home, &codex_home] {
        std::fs::create_dir_all(dir).expect("a directory for Codex");
    }
    let config = format!(
        "model_provider = \"mock\"\nmodel = \"{MODEL}\"\n\n[model_providers.mock]\n\
         name = \"mock\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\n\
         env_key = \"OPENAI_API_KEY\"\n",
        env.server.base_url()
    );
    std::fs::write(codex_home.join("config.toml"), config).expect("Codex's config");
    [
        "/usr/bin/env".to_owned(),
        format!("HOME={}", home.display()),
        format!("CODEX_HOME={}", codex_home.display()),
        format!("CODEX_CA_CERTIFICATE={}", env.server.ca.display()),
        format!("OPENAI_API_KEY={CANARY_API_KEY}"),
        codex.display().to_string(),
        "exec".into(),
        "--json".into(),
        "--skip-git-repo-check".into(),
        "--cd".into(),
        env.dir().display().to_string(),
        PROMPT.into(),
    ]
    .into()
}

/// What Codex printed (`--json` events): its reply and the usage of its turn.
struct CodexSaw {
    reply: String,
    usage: Value,
}

fn codex_saw(stdout: &str) -> CodexSaw {
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reply = events
        .iter()
        .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
        .filter_map(|e| e["item"]["text"].as_str())
        .collect();
    let usage = events
        .iter()
        .find(|e| e["type"] == "turn.completed")
        .map(|e| e["usage"].clone())
        .unwrap_or_else(|| panic!("Codex finished no turn:\n{stdout}"));
    CodexSaw { reply, usage }
}

/// The one call Codex made: its span agrees with what the mock served and what Codex saw.
fn assert_codex_call(env: &TestEnv, run: &ObserverRun, saw: &CodexSaw) {
    assert_eq!(saw.reply, mock::reply_text(PROMPT), "Codex's reply");
    let served: Vec<Value> = env
        .server
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/responses")
        .collect();
    assert_eq!(served.len(), 1, "Codex made one Responses call: {served:?}");
    let served = &served[0];
    assert_eq!(served["version"], "h2", "over HTTP/2: {served}");
    let calls: Vec<&Span> = run
        .spans
        .iter()
        .filter(|s| s.is_call() && s.str("process.executable.name") == Some("codex"))
        .collect();
    assert_eq!(calls.len(), 1, "{:?}", run.spans);
    let span = calls[0];
    let expect = |key: &str, value: Value| {
        assert_eq!(span.get(key), Some(&value), "{key} in {span}");
    };
    expect("gen_ai.provider.name", "openai".into());
    expect("gen_ai.request.model", MODEL.into());
    expect("gen_ai.response.model", mock::response_model(MODEL).into());
    expect("gen_ai.response.id", served["response_id"].clone());
    expect(
        "gen_ai.usage.input_tokens",
        saw.usage["input_tokens"].clone(),
    );
    expect(
        "gen_ai.usage.output_tokens",
        saw.usage["output_tokens"].clone(),
    );
    expect("gen_ai.response.finish_reasons", json!(["completed"]));
    expect("gen_ai.request.stream", true.into());
    expect("url.path", "/v1/responses".into());
    expect("http.request.method", "POST".into());
    expect("http.response.status_code", 200.into());
    expect("server.port", env.server.port.into());
    expect("observer.tls.library", "rustls".into());
    assert_eq!(span.output_text(), saw.reply, "output text in {span}");
    assert_eq!(span.last_user_text().as_deref(), Some(PROMPT), "{span}");
    assert_located_by_shape(&run.stderr, "codex");
}

/// The observer says how it found rustls, and that it cross-checked it.
fn assert_located_by_shape(stderr: &str, exe: &str) {
    assert!(
        stderr.lines().any(|l| l.contains("attached rustls probes")
            && l.contains(exe)
            && l.contains("without symbols, by code shape")
            && l.contains("cross-checked")),
        "no log line saying how {exe}'s rustls was found:\n{stderr}"
    );
}

/// Every record the clients decrypted belonged to a session the probes knew.
fn assert_no_unknown_session(stderr: &str) {
    assert!(
        stderr.contains(" 0 rustls records lost"),
        "decrypted records of unknown sessions:\n{stderr}"
    );
}

/// `codex exec` started while the observer watches the whole host (not its child), a copy
/// never seen (its analysis, hashing included, made while its exec is held).
#[test]
fn codex_cli_under_the_whole_host_watch() {
    let env = TestEnv::new();
    let codex = env.fresh_copy(&npm_program(CODEX));
    let watcher = env.watch_unseen();
    let mut codex = env.spawn_client(&codex_exec(&env, &codex));
    let status = codex.wait(std::time::Duration::from_secs(120));
    assert!(status.success(), "Codex failed: {}", codex.describe());
    let saw = codex_saw(&codex.stdout.text());
    watcher.wait_for_spans(std::time::Duration::from_secs(20), |spans| {
        spans
            .iter()
            .any(|s| s.is_call() && s.str("process.executable.name") == Some("codex"))
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    assert_codex_call(&env, &run, &saw);
    assert_no_unknown_session(&run.stderr);
}

/// `observer capture -- codex exec …`: Codex held at its exec until its probes are on.
#[test]
fn codex_cli_as_a_command() {
    let env = TestEnv::new();
    let run = env.capture(&codex_exec(&env, &npm_program(CODEX)), false);
    let saw = codex_saw(&run.stdout);
    assert_codex_call(&env, &run, &saw);
    assert_no_unknown_session(&run.stderr);
}

/// The reqwest client built like Codex (fat LTO, one codegen unit, no symbols): rustls's
/// send and the record layer's decryption are inlined where the symbols would have named
/// them. OpenAI and Anthropic calls, JSON and streamed, on one kept-alive connection.
const SCENARIOS: [&str; 4] = [
    "chat_json",
    "chat_stream",
    "messages_json",
    "messages_stream",
];

fn stripped_client(client: &Path) -> Vec<String> {
    let mut argv = vec![client.display().to_string()];
    argv.extend(SCENARIOS.iter().map(|s| s.to_string()));
    argv
}

#[test]
fn stripped_lto_rustls_client_as_a_command() {
    let env = TestEnv::new();
    let client = profile_program("stripped-lto", "rustls-client");
    let run = env.check_command(&stripped_client(&client), expected_calls(&SCENARIOS), false);
    for span in run.spans.iter().filter(|s| s.is_call()) {
        assert_eq!(span.str("observer.tls.library"), Some("rustls"), "{span}");
    }
    let conns = env.connections(&run.calls);
    assert!(
        conns[0].is_some() && conns.iter().all(|c| *c == conns[0]),
        "test setup: reqwest was meant to reuse one connection, server saw {conns:?}"
    );
    assert_located_by_shape(&run.stderr, "rustls-client");
    assert_no_unknown_session(&run.stderr);
}

/// A copy never seen, its analysis cache empty; the mock server (rustls without symbols too)
/// is followed as well: its side of the connections is recognised and not copied.
#[test]
fn stripped_lto_rustls_client_under_the_whole_host_watch() {
    let env = TestEnv::new();
    let client = env.fresh_copy(&profile_program("stripped-lto", "rustls-client"));
    let (run, calls): (ObserverRun, Vec<ClientCall>) =
        env.watch_host_while_unseen(&stripped_client(&client));
    assert_eq!(calls.len(), expected_calls(&SCENARIOS));
    let pid = calls[0].pid() as u32;
    let spans = run.spans_of(pid);
    assert_spans_match_calls(&spans, &calls, env.server.port);
    assert_located_by_shape(&run.stderr, "rustls-client");
    assert_no_unknown_session(&run.stderr);
    // The mock server is rustls without symbols too: its side is not copied.
    assert!(
        !run.stderr.contains(" 0 rustls calls on server sides"),
        "the mock server's side was not recognised:\n{}",
        run.stderr
    );
}
