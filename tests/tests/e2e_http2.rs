//! HTTP/2: curl (OpenSSL, nghttp2) negotiates h2 by ALPN with the mock server; the observer
//! must decode the frames and HPACK of the connection into the same spans as over HTTP/1.1.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use observer_e2e::{TestEnv, assert_spans_match_calls};

const SCENARIOS: &[&str] = &[
    "chat_json",
    "chat_sse",
    "messages_json",
    "messages_sse",
    "chat_big_body",
];

/// A `curl` that speaks HTTP/2 whatever it is asked (the client script asks for HTTP/1.1; the
/// last version option wins). It execs curl, so the process the client reports is curl itself.
fn http2_curl(dir: &Path) -> PathBuf {
    let path = dir.join("curl-http2");
    std::fs::write(&path, "#!/bin/sh\nexec /usr/bin/curl \"$@\" --http2\n").expect("write wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// JSON and SSE calls (OpenAI and Anthropic formats) and a request body over 100 KiB, sent in
/// 16 KiB DATA frames under flow control: one span per call, agreeing with what curl saw.
#[test]
fn curl_http2_json_sse_and_big_request_body() {
    let env = TestEnv::new();
    let curl = http2_curl(env.dir());
    let mut client = vec![
        "/usr/bin/env".to_owned(),
        format!("CURL={}", curl.display()),
    ];
    client.extend(env.client("curl_calls.py", SCENARIOS));
    let run = env.capture(&client, false);

    assert_eq!(
        run.calls.len(),
        SCENARIOS.len(),
        "curl reported {} calls\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.calls.len(),
        run.stdout,
        run.stderr
    );
    let served = env.server.requests();
    assert!(
        !served.is_empty() && served.iter().all(|r| r["version"] == "h2"),
        "test setup: every request was meant to be HTTP/2, the server saw {served:?}"
    );
    for call in &run.calls {
        call.assert_consistent_with_mock();
    }
    assert_spans_match_calls(&run.spans, &run.calls, env.server.port);
}
