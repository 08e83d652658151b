//! The Prometheus endpoint of `observer capture --metrics-addr`, scraped while it watches
//! real SDK calls.
use std::time::Duration;

use observer_e2e::{
    ClientCall, TestEnv,
    harness::{free_port, http_get},
};

/// `GET /metrics`: the body.
fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// The sum of every sample of `metric` whose labels contain all of `labels`.
fn total(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_count_the_calls_tokens_and_the_observers_health() {
    let env = TestEnv::new();
    let port = free_port();
    let watcher = env.watch(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let mut client = env.spawn_client(&env.client(
        "openai_calls.py",
        &["chat_json", "chat_stream_usage", "chat_429"],
    ));
    assert!(
        client.wait(Duration::from_secs(60)).success(),
        "client failed: {}",
        client.describe()
    );
    let calls = ClientCall::parse_all(&client.stdout.text());
    assert_eq!(calls.len(), 3);
    let pid = u64::from(client.pid());
    watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans
            .iter()
            .filter(|s| s.is_call() && s.u64("process.pid") == Some(pid))
            .count()
            >= 3
    });
    // Health is brought up to date about once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let text = scrape(port);
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();

    let provider = r#"gen_ai_provider_name="openai""#;
    let ok = r#"error_type="""#;
    // Other processes on the host may call LLMs too: at least ours.
    assert!(
        total(&text, "gen_ai_client_calls_total", &[provider, ok]) >= 2.0,
        "{text}"
    );
    let all_calls = total(&text, "gen_ai_client_calls_total", &[provider]);
    let failed = all_calls - total(&text, "gen_ai_client_calls_total", &[provider, ok]);
    assert!(failed >= 1.0, "the 429 counts as failed: {text}");
    let input: u64 = calls.iter().filter_map(|c| c.input_tokens()).sum();
    let output: u64 = calls.iter().filter_map(|c| c.output_tokens()).sum();
    let tokens = |kind: &str| {
        let kind = format!(r#"gen_ai_token_type="{kind}""#);
        total(&text, "gen_ai_client_token_usage_sum", &[provider, &kind])
    };
    assert!(tokens("input") >= input as f64, "input {input}: {text}");
    assert!(tokens("output") >= output as f64, "output {output}: {text}");
    assert!(
        total(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &[provider]
        ) >= 3.0,
        "{text}"
    );
    assert!(
        total(
            &text,
            "gen_ai_client_operation_time_to_first_chunk_seconds_count",
            &[provider]
        ) >= 1.0,
        "the streamed call: {text}"
    );
    assert!(total(&text, "observer_events_total", &[]) > 0.0, "{text}");
    assert!(total(&text, "observer_bytes_total", &[]) > 0.0, "{text}");
    assert!(
        total(&text, "observer_attached_targets", &[]) >= 1.0,
        "{text}"
    );
    for health in [
        "observer_events_lost_total",
        "observer_calls_truncated_total",
        "observer_parse_failures_total",
        "observer_spans_total",
    ] {
        assert!(
            text.contains(&format!("\n{health} ")),
            "{health} missing: {text}"
        );
    }
}
