//! Gemini through the official google-genai SDK (httpx2 over OpenSSL), under `observer capture`:
//! generateContent and streamGenerateContent (`?alt=sse`, CRLF-framed events), function calls,
//! the provider's error bodies (429, 500, 404) and a stream cut off half-way, over HTTP/1.1
//! and over HTTP/2.

use observer_e2e::{Span, TestEnv, assert_spans_match_calls};

const SCENARIOS: &[&str] = &[
    "generate",
    "generate_stream",
    "generate_tool",
    "generate_tool_stream",
    "generate_stream_split",
    "generate_429",
    "generate_500",
    "generate_404",
    "generate_interrupted",
];

/// The span's rate-limit attributes on a 429: the `retry-after` header.
fn assert_retry_after(spans: &[Span]) {
    let throttled: Vec<&Span> = spans
        .iter()
        .filter(|s| s.u64("http.response.status_code") == Some(429))
        .collect();
    assert!(
        !throttled.is_empty(),
        "no 429 span among {} spans",
        spans.len()
    );
    for span in throttled {
        assert_eq!(
            span.u64("observer.ratelimit.retry_after"),
            Some(2),
            "the 429's retry-after header is missing from the span:\n{span}"
        );
    }
}

#[test]
fn google_genai_sdk_over_http1() {
    let env = TestEnv::new();
    let run = env.check_client("gemini_calls.py", SCENARIOS, true);
    assert_retry_after(&run.spans);
    let served = env.server.requests();
    assert!(
        served.iter().all(|r| r["version"] == "http/1.1"),
        "test setup: google-genai was meant to speak HTTP/1.1, the server saw {served:?}"
    );
}

#[test]
fn google_genai_sdk_over_http2() {
    let env = TestEnv::new();
    let mut client = vec!["/usr/bin/env".to_owned(), "GENAI_HTTP2=1".to_owned()];
    client.extend(env.client("gemini_calls.py", SCENARIOS));
    let run = env.capture(&client, false);
    assert_eq!(
        run.calls.len(),
        SCENARIOS.len(),
        "client output:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let served = env.server.requests();
    assert!(
        !served.is_empty() && served.iter().all(|r| r["version"] == "h2"),
        "test setup: google-genai was meant to speak HTTP/2, the server saw {served:?}"
    );
    for call in &run.calls {
        call.assert_consistent_with_mock();
    }
    assert_spans_match_calls(&run.spans, &run.calls, env.server.port);
    assert_retry_after(&run.spans);
}
