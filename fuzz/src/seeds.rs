//! The inputs each target starts from, derived at start-up from the recorded fixtures
//! (`tests/fixtures/*/capture.rec`: real clients' TLS traffic with the mock server), so the
//! fuzzers begin from realistic connections and bodies and no corpus is checked in.
use std::path::{Path, PathBuf};

use observer::{
    capture::{CaptureEvent, Chunk, Direction, record::RecordReader},
    http::{ConnectionStage, Exchange},
    llm::framing::eventstream::encode,
    reassemble::StreamInput,
};
use serde_json::json;

use crate::{Call, H2_PREFACE, encode_calls, flag};

/// Larger seeds slow every execution more than they add coverage.
const MAX_SEED: usize = 32 << 10;
/// Ends the request body in a `providers` input (never in UTF-8 JSON).
pub const REQUEST_END: u8 = 0xFF;

/// Writes `seeds()` into the first corpus directory on libFuzzer's command line (the one
/// `cargo fuzz run` passes: `fuzz/corpus/TARGET`), named `seed-N` so a new run overwrites
/// rather than adds. Nothing is written when no directory is given (reproducing a crash).
pub fn write_into_corpus(seeds: fn() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-') && Path::new(arg).is_dir())
    else {
        return;
    };
    let seeds = seeds();
    for (i, seed) in seeds.iter().enumerate() {
        let path = Path::new(&dir).join(format!("seed-{i}"));
        if let Err(error) = std::fs::write(&path, seed) {
            eprintln!("could not write the seed {}: {error}", path.display());
        }
    }
    eprintln!("{} seeds from the recorded fixtures in {dir}", seeds.len());
}

/// Every recorded HTTP/1 connection, as [`crate::calls`] input with its recorded TLS calls.
pub fn http1() -> Vec<Vec<u8>> {
    recorded_connections()
        .into_iter()
        .filter(|chunks| !starts_with_preface(chunks))
        .map(|chunks| encode_chunks(&chunks, 0))
        .collect()
}

/// Every recorded HTTP/2 connection, its preface left out (the target adds it).
pub fn http2() -> Vec<Vec<u8>> {
    recorded_connections()
        .into_iter()
        .filter(|chunks| starts_with_preface(chunks))
        .map(|chunks| encode_chunks(&chunks, H2_PREFACE.len()))
        .collect()
}

/// `providers` input: `HOST PATH\n`, the request body, [`REQUEST_END`], the raw HTTP/1.1
/// response, after a first byte saying how to split the response into reads.
pub fn providers() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = recorded_exchanges()
        .iter()
        .filter_map(|exchange| {
            let response = exchange.response.as_ref()?;
            let host = exchange.request.headers.get("host")?;
            let mut head = format!("HTTP/1.1 {} X\r\n", response.status);
            for (name, value) in &response.headers.0 {
                // The body is recorded decoded: its framing and encoding headers no longer hold.
                let framing = ["content-length", "transfer-encoding", "content-encoding"]
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h));
                if !framing && !name.starts_with(':') {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
            }
            head.push_str("\r\n");
            Some(provider_input(
                host,
                &exchange.request.target,
                &exchange.request.body.data,
                &[head.as_bytes(), &response.body.data].concat(),
            ))
        })
        .collect();
    // The endpoints the fixtures do not record: a minimal call to each.
    for (host, path, request, content_type, response) in [
        (
            "api.openai.com",
            "/v1/responses",
            r#"{"model":"gpt-4o","input":"hi"}"#,
            "application/json",
            r#"{"id":"resp_1","model":"gpt-4o","output":[{"type":"message","content":[{"type":"output_text","text":"hello"}]}],"usage":{"input_tokens":3,"output_tokens":1}}"#,
        ),
        (
            "api.openai.com",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"hi"}"#,
            "application/json",
            r#"{"data":[{"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":1,"total_tokens":1}}"#,
        ),
        (
            "api.anthropic.com",
            "/v1/messages",
            r#"{"model":"claude-3-5-haiku","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            "text/event-stream",
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-3-5-haiku\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n",
        ),
        (
            "api.cohere.com",
            "/v2/chat",
            r#"{"model":"command-r","messages":[{"role":"user","content":"hi"}]}"#,
            "application/json",
            r#"{"id":"c1","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"hello"}]},"usage":{"tokens":{"input_tokens":3,"output_tokens":1}}}"#,
        ),
        (
            "api.cohere.com",
            "/v2/embed",
            r#"{"model":"embed-english-v3.0","texts":["hi"]}"#,
            "application/json",
            r#"{"id":"e1","embeddings":{"float":[[0.1]]},"meta":{"billed_units":{"input_tokens":1}}}"#,
        ),
        (
            "localhost:11434",
            "/api/generate",
            r#"{"model":"llama3","prompt":"hi"}"#,
            "application/x-ndjson",
            "{\"model\":\"llama3\",\"response\":\"hel\",\"done\":false}\n{\"model\":\"llama3\",\"response\":\"lo\",\"done\":true,\"prompt_eval_count\":3,\"eval_count\":1}\n",
        ),
        (
            "localhost:11434",
            "/api/embed",
            r#"{"model":"all-minilm","input":"hi"}"#,
            "application/json",
            r#"{"model":"all-minilm","embeddings":[[0.1]],"prompt_eval_count":1}"#,
        ),
        (
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
            "application/json",
            r#"[{"candidates":[{"content":{"parts":[{"text":"hello"}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}]"#,
        ),
    ] {
        let response = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\r\n{response}");
        seeds.push(provider_input(
            host,
            path,
            request.as_bytes(),
            response.as_bytes(),
        ));
    }
    let stream = bedrock_stream();
    let response = [
        &b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n\r\n"[..],
        &stream,
    ]
    .concat();
    seeds.push(provider_input(
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/anthropic.claude-3-haiku/converse-stream",
        br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
        &response,
    ));
    seeds.retain(|seed| seed.len() <= MAX_SEED);
    seeds
}

/// Every recorded response body (decoded), and a Bedrock event stream.
pub fn framings() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = recorded_exchanges()
        .into_iter()
        .filter_map(|exchange| Some(exchange.response?.body.data.to_vec()))
        .filter(|body| !body.is_empty() && body.len() <= MAX_SEED)
        .collect();
    seeds.push(bedrock_stream());
    seeds
}

fn provider_input(host: &str, path: &str, request_body: &[u8], response: &[u8]) -> Vec<u8> {
    let mut input = vec![0];
    input.extend_from_slice(format!("{host} {path}\n").as_bytes());
    input.extend_from_slice(request_body);
    input.push(REQUEST_END);
    input.extend_from_slice(response);
    input
}

/// A ConverseStream reply as Bedrock frames it (no fixture records one).
fn bedrock_stream() -> Vec<u8> {
    [
        encode::event("messageStart", &json!({"role": "assistant"})),
        encode::event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "hello"}}),
        ),
        encode::event("messageStop", &json!({"stopReason": "end_turn"})),
        encode::event(
            "metadata",
            &json!({"usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
                    "metrics": {"latencyMs": 12}}),
        ),
    ]
    .concat()
}

fn fixture_recordings() -> Vec<PathBuf> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut recordings: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path().join("capture.rec"))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    recordings.sort();
    recordings
}

fn recorded_events(path: &Path) -> Vec<CaptureEvent> {
    match RecordReader::open(path) {
        Ok(reader) => reader.map_while(Result::ok).collect(),
        Err(error) => {
            eprintln!("skipping {}: {error:#}", path.display());
            Vec::new()
        }
    }
}

/// Each recorded connection's chunks, in recorded order.
fn recorded_connections() -> Vec<Vec<Chunk>> {
    let mut connections: Vec<Vec<Chunk>> = Vec::new();
    for path in fixture_recordings() {
        let mut of_this: Vec<Vec<Chunk>> = Vec::new();
        for event in recorded_events(&path) {
            if let CaptureEvent::Data(chunk) = event {
                match of_this.iter_mut().find(|c| c[0].conn == chunk.conn) {
                    Some(chunks) => chunks.push(chunk),
                    None => of_this.push(vec![chunk]),
                }
            }
        }
        connections.extend(of_this);
    }
    connections
}

/// The exchanges the HTTP stage makes of each recording.
fn recorded_exchanges() -> Vec<Exchange> {
    let mut exchanges = Vec::new();
    for path in fixture_recordings() {
        let mut stage = ConnectionStage::default();
        let mut last_ts = 0;
        for event in recorded_events(&path) {
            last_ts = last_ts.max(event.ts());
            if let Some(input) = StreamInput::of(event) {
                stage.push(input, &mut exchanges);
            }
        }
        stage.flush_all(last_ts, &mut exchanges);
    }
    exchanges
}

fn starts_with_preface(chunks: &[Chunk]) -> bool {
    chunks
        .iter()
        .find(|c| c.dir == Direction::Egress)
        .is_some_and(|c| c.data.starts_with(H2_PREFACE))
}

/// The connection's chunks as TLS calls (up to [`MAX_SEED`] bytes), the first `skip` egress
/// bytes left out.
fn encode_chunks(chunks: &[Chunk], mut skip: usize) -> Vec<u8> {
    let mut calls = Vec::new();
    let mut size = 0;
    for chunk in chunks {
        let mut data = &chunk.data[..];
        if chunk.dir == Direction::Egress && skip > 0 {
            let skipped = skip.min(data.len());
            data = &data[skipped..];
            skip -= skipped;
        }
        size += data.len() + 3;
        if size > MAX_SEED {
            break;
        }
        let flags = match chunk.dir {
            Direction::Egress => 0,
            Direction::Ingress => flag::INGRESS,
        };
        calls.push(Call { flags, data });
    }
    encode_calls(calls)
}
