//! The AWS Bedrock runtime: `POST /model/{modelId}/converse` (JSON), `/converse-stream`,
//! `/invoke` and `/invoke-with-response-stream` (Anthropic models' Messages bodies). Streams
//! are AWS event streams (`application/vnd.amazon.eventstream`): binary messages with
//! CRC32-checked preludes and bodies, as botocore parses them. The model id travels
//! percent-encoded in the path.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Body, Call, Failure, Handler, Provider, Response, Route, anthropic_messages, mock};

pub(crate) fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/model/")?;
    let (model, action) = rest.rsplit_once('/')?;
    let (handler, stream): (Handler, bool) = match action {
        "converse" => (converse, false),
        "converse-stream" => (converse, true),
        "invoke" => (invoke, false),
        "invoke-with-response-stream" => (invoke, true),
        _ => return None,
    };
    let model = percent_encoding::percent_decode_str(model)
        .decode_utf8_lossy()
        .into_owned();
    Some(Route {
        model: Some(model),
        stream: Some(stream),
        ..Route::new(Provider::Bedrock, handler)
    })
}

/// One event-stream message: prelude (total and headers lengths, CRC32 of both), string
/// headers (type 7), payload, CRC32 of everything before it.
pub(crate) fn eventstream_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded_headers = Vec::new();
    for (name, value) in headers {
        encoded_headers.push(name.len() as u8);
        encoded_headers.extend_from_slice(name.as_bytes());
        encoded_headers.push(7);
        encoded_headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded_headers.extend_from_slice(value.as_bytes());
    }
    let total = 12 + encoded_headers.len() + payload.len() + 4;
    let mut message = Vec::with_capacity(total);
    message.extend_from_slice(&(total as u32).to_be_bytes());
    message.extend_from_slice(&(encoded_headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&message);
    message.extend_from_slice(&prelude_crc.to_be_bytes());
    message.extend_from_slice(&encoded_headers);
    message.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&message);
    message.extend_from_slice(&message_crc.to_be_bytes());
    message
}

/// An event of type `kind`. Bedrock pads every payload with a `p` field of varying length
/// (so sizes do not reveal content); clients ignore it.
fn event(kind: &str, mut payload: Value, n: usize) -> Vec<u8> {
    payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[..(n * 7) % 36].to_owned());
    let headers = [
        (":event-type", kind),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ];
    eventstream_message(&headers, payload.to_string().as_bytes())
}

fn stream_response(c: &Call, events: Vec<Vec<u8>>) -> Response {
    c.stream_of(
        "application/vnd.amazon.eventstream",
        Body::Events(events),
        None,
    )
}

fn converse(c: &Call) -> Response {
    let reply = c.reply();
    let tool = c.tool.as_ref().map(|name| {
        (
            format!("tooluse_mock{:06}", c.n),
            name.clone(),
            c.tool_arguments.clone(),
        )
    });
    let (output_tokens, stop_reason) = match &tool {
        Some((_, _, args)) => (mock::output_tokens(&args.to_string()), "tool_use"),
        None => (mock::output_tokens(&reply), "end_turn"),
    };
    let usage = json!({"inputTokens": c.input_tokens, "outputTokens": output_tokens,
        "totalTokens": c.input_tokens + output_tokens});
    let metrics = json!({"latencyMs": 321});
    if !c.stream {
        let content = match &tool {
            Some((id, name, args)) => {
                json!([{"toolUse": {"toolUseId": id, "name": name, "input": args}}])
            }
            None => json!([{ "text": reply }]),
        };
        // Converse responses carry no id and no model: the request id is a header.
        return c.json(
            json!({"output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop_reason, "usage": usage, "metrics": metrics}),
            None,
        );
    }
    let mut payloads = vec![("messageStart", json!({"role": "assistant"}))];
    match &tool {
        Some((id, name, args)) => {
            payloads.push((
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
            ));
            for fragment in mock::argument_fragments(&args.to_string()) {
                payloads.push((
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": fragment}}}),
                ));
            }
        }
        None => {
            for piece in mock::deltas(&reply) {
                payloads.push((
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                ));
            }
        }
    }
    payloads.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
    payloads.push(("messageStop", json!({ "stopReason": stop_reason })));
    payloads.push(("metadata", json!({"usage": usage, "metrics": metrics})));
    let events = payloads
        .into_iter()
        .enumerate()
        .map(|(i, (kind, payload))| event(kind, payload, i))
        .collect();
    stream_response(c, events)
}

/// `invoke` speaks the model family's own API; only Anthropic's Messages is mocked.
fn invoke(c: &Call) -> Response {
    if !c.model.contains("anthropic.") {
        let message = format!(
            "The mock serves invoke for Anthropic models only, not {}",
            c.model
        );
        return super::failure(
            Provider::Bedrock,
            Failure::BadRequest,
            &message,
            &c.request_id,
            Vec::new(),
        );
    }
    let messages = anthropic_messages(c);
    let Body::Events(sse_events) = messages.body else {
        return messages;
    };
    // The same Messages stream events, each JSON event base64-encoded in a `chunk`; Bedrock adds
    // its own token count to the last one.
    let mut chunks: Vec<Value> = sse_events
        .iter()
        .filter_map(|event| {
            let text = std::str::from_utf8(event).ok()?;
            let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
            serde_json::from_str(data).ok()
        })
        .collect();
    let output_tokens = chunks
        .iter()
        .find(|e| e["type"] == "message_delta")
        .and_then(|e| e.pointer("/usage/output_tokens"))
        .cloned()
        .unwrap_or(json!(0));
    if let Some(last) = chunks.last_mut() {
        last["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": c.input_tokens,
            "outputTokenCount": output_tokens, "invocationLatency": 321, "firstByteLatency": 123});
    }
    let events = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let bytes = base64::engine::general_purpose::STANDARD.encode(chunk.to_string());
            event("chunk", json!({ "bytes": bytes }), i)
        })
        .collect();
    Response {
        log_id: messages.log_id,
        ..stream_response(c, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_the_model_id() {
        let r = route("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream").unwrap();
        assert_eq!(
            r.model.as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert_eq!(r.stream, Some(true));
        assert!(route("/model/x/unknown").is_none());
    }

    #[test]
    fn eventstream_lengths_and_crcs() {
        let m = eventstream_message(&[(":event-type", "chunk")], b"{}");
        assert_eq!(
            u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32fast::hash(&m[..8])
        );
        let end = m.len() - 4;
        assert_eq!(
            u32::from_be_bytes(m[end..].try_into().unwrap()),
            crc32fast::hash(&m[..end])
        );
    }
}
