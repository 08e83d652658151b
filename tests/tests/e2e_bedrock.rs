//! AWS Bedrock runtime through boto3 (botocore over urllib3/OpenSSL), `endpoint_url` pointing at
//! the mock server: Converse and ConverseStream (AWS event-stream framing with CRCs, text and
//! tool use), InvokeModel and InvokeModelWithResponseStream of an Anthropic model (Messages
//! events base64-encoded in event-stream chunks), and throttling / server errors named by
//! `x-amzn-ErrorType`. Requests are SigV4-signed: neither the signature nor the session token
//! may appear in anything the observer writes.

use observer_e2e::TestEnv;

#[test]
fn boto3_converse_invoke_streams_and_errors() {
    let env = TestEnv::new();
    let run = env.check_client(
        "bedrock_calls.py",
        &[
            "converse",
            "converse_stream",
            "converse_tool",
            "converse_tool_stream",
            "converse_stream_split",
            "invoke",
            "invoke_stream",
            "converse_429",
            "converse_500",
        ],
        true,
    );
    let signatures: Vec<String> = env
        .server
        .requests()
        .iter()
        .filter_map(|r| r["sigv4_signature"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        signatures.len(),
        9,
        "test setup: every request was meant to be SigV4-signed"
    );
    let mut written = run.stdout.clone() + &run.stderr;
    for file in std::iter::once(&run.output_file).chain(&run.record_file) {
        written.push_str(&String::from_utf8_lossy(
            &std::fs::read(file).unwrap_or_default(),
        ));
    }
    for signature in signatures {
        assert!(
            !written.contains(&signature),
            "the SigV4 signature {signature} leaked into the observer's output or recording"
        );
    }
}
