//! TLS libraries other than OpenSSL, each through a real program.

use observer_e2e::TestEnv;

/// Debian's wget links GnuTLS: gnutls_record_send/recv carry its plaintext. OpenAI and
/// Anthropic calls, JSON and SSE, one wget process per call.
#[test]
fn wget_over_gnutls() {
    let env = TestEnv::new();
    let run = env.check_client(
        "wget_calls.py",
        &["chat_json", "chat_sse", "messages_json", "messages_sse"],
        false,
    );
    for span in run.spans.iter().filter(|s| s.is_call()) {
        assert_eq!(
            span.str("observer.tls.library"),
            Some("gnutls"),
            "wget's bytes come through GnuTLS: {span:?}"
        );
    }
}
