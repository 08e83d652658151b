//! Gemini through the official google-genai SDK (httpx2 over OpenSSL), under `observer capture`:
//! generateContent and streamGenerateContent (`?alt=sse`, CRLF-framed events), function calls,
//! the provider's error bodies (429, 500, 404) and a stream cut off half-way, over HTTP/1.1
//! and over HTTP/2.

use observer_e2e::{Span, TestEnv};

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
    let run = env.check_client_with_env("gemini_calls.py", SCENARIOS, &["GENAI_HTTP2=1"], false);
    let served = env.server.requests();
    assert!(
        !served.is_empty() && served.iter().all(|r| r["version"] == "h2"),
        "test setup: google-genai was meant to speak HTTP/2, the server saw {served:?}"
    );
    assert_retry_after(&run.spans);
}
