//! Exchanges as the HTTP stage hands them over, built by hand.
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::capture::{ConnKey, TlsLibrary};
use crate::http::{Body, BodyPart, Exchange, ExchangeEnd, Headers, Request, Response};
use crate::llm::{LlmCall, LlmStage};

/// The request's last byte left at this time (Unix ns).
pub const REQUEST_END: u64 = 1_700_000_000_000_000_000;
/// The response's first part arrives this long after the request ended.
pub const RESPONSE_DELAY: u64 = 200_000_000;
/// Each further part arrives this long after the previous one.
pub const PART_GAP: u64 = 10_000_000;

/// A body that arrived in parts ending at `cuts` (and at its end), `PART_GAP` apart.
pub fn body_in_parts(data: &str, cuts: &[usize]) -> Body {
    let mut ends: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&cut| cut > 0 && cut < data.len())
        .chain([data.len()])
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let parts = (0..)
        .zip(ends)
        .map(|(i, end)| BodyPart {
            ts: REQUEST_END + RESPONSE_DELAY + i * PART_GAP,
            end,
        })
        .collect();
    Body {
        data: Bytes::copy_from_slice(data.as_bytes()),
        parts,
        truncated: false,
        problem: None,
    }
}

/// A body that arrived whole.
pub fn whole_body(data: &str) -> Body {
    body_in_parts(data, &[])
}

/// An event stream whose events each arrived in their own part.
pub fn body_per_event(data: &str) -> Body {
    let cuts: Vec<usize> = data.match_indices("\n\n").map(|(at, _)| at + 2).collect();
    body_in_parts(data, &cuts)
}

/// A POST to `host` + `target` that got no response (yet).
pub fn post(host: &str, target: &str, request: &Value) -> Exchange {
    let body = whole_body(&request.to_string());
    Exchange {
        conn: ConnKey {
            pid: 42,
            conn: 0xdead_beef,
        },
        tid: 43,
        library: TlsLibrary::OpenSsl,
        request: Request {
            method: "POST".into(),
            target: target.into(),
            headers: Headers(vec![
                ("Host".into(), host.into()),
                ("Content-Type".into(), "application/json".into()),
                ("Authorization".into(), "[redacted]".into()),
            ]),
            ts_start: REQUEST_END - 1_000_000,
            ts_end: REQUEST_END,
            body,
        },
        response: None,
        end: ExchangeEnd::Complete,
    }
}

/// `exchange`, answered.
pub fn answer(mut exchange: Exchange, status: u16, content_type: &str, body: Body) -> Exchange {
    let last_ts = body.parts.last().map_or(REQUEST_END, |part| part.ts);
    exchange.response = Some(Response {
        status,
        headers: Headers(vec![("Content-Type".into(), content_type.into())]),
        body,
        ts_start: REQUEST_END + RESPONSE_DELAY,
        ts_end: last_ts,
    });
    exchange
}

pub fn json_exchange(
    host: &str,
    target: &str,
    request: &Value,
    status: u16,
    response: &Value,
) -> Exchange {
    let body = whole_body(&response.to_string());
    answer(
        post(host, target, request),
        status,
        "application/json",
        body,
    )
}

pub fn sse_exchange(host: &str, target: &str, request: &Value, stream: &str) -> Exchange {
    answer(
        post(host, target, request),
        200,
        "text/event-stream; charset=utf-8",
        body_per_event(stream),
    )
}

/// The LLM call `exchange` makes, read with the default settings.
pub fn recognise(exchange: &Exchange) -> Option<LlmCall> {
    LlmStage::default()
        .recognise(exchange)
        .map(|recognised| recognised.call)
}

/// Recognises an exchange that must be an LLM call.
pub fn recognised(exchange: &Exchange) -> LlmCall {
    recognise(exchange).expect("recognised as an LLM call")
}

/// The attribute `key`, which must be present.
pub fn get<'a>(call: &'a LlmCall, key: &str) -> &'a Value {
    call.attribute(key)
        .unwrap_or_else(|| panic!("{key} missing from {:#?}", call.attributes))
}

/// Attributes that do not depend on arrival times.
pub fn timeless(call: &LlmCall) -> Map<String, Value> {
    let mut attributes = call.attributes.clone();
    attributes.remove(crate::llm::attr::RESPONSE_TIME_TO_FIRST_CHUNK);
    attributes.remove(crate::llm::attr::RESPONSE_TIME_PER_OUTPUT_CHUNK);
    attributes
}

/// Builds an SSE body from `(event type, data)` pairs, one blank-line-terminated event each.
pub fn sse(events: &[(Option<&str>, Value)]) -> String {
    events
        .iter()
        .map(|(event, data)| match event {
            Some(event) => format!("event: {event}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        })
        .collect()
}

/// Seconds from the request's end to part `index` of a response.
pub fn part_time(index: u64) -> f64 {
    (RESPONSE_DELAY + index * PART_GAP) as f64 / 1e9
}

/// An SSE body of events named after their `type` field, as the Responses API and Anthropic send.
pub fn typed_sse(events: &[Value]) -> String {
    let typed: Vec<(Option<&str>, Value)> = events
        .iter()
        .map(|event| (event["type"].as_str(), event.clone()))
        .collect();
    sse(&typed)
}
