//! Spans in OTLP's protobuf form: each span encoded on its own (so a queue can weigh it), then
//! a batch grouped into one ResourceSpans per process. The resource says which process made
//! the calls (with the configured attributes, `service.name` and `host.name`); the spans keep
//! their `process.*` attributes too.
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{self as otlp, ResourceSpans, ScopeSpans, span::SpanKind, status::StatusCode},
};
use prost::Message;
use serde_json::Value;

use crate::{llm::attr, span::Span};

/// The span attributes that describe its process, repeated on the resource.
const PROCESS_ATTRIBUTES: [&str; 4] = [
    attr::PROCESS_PID,
    attr::PROCESS_EXECUTABLE_NAME,
    attr::PROCESS_EXECUTABLE_PATH,
    attr::CONTAINER_ID,
];

/// One span, encoded, with what its resource needs.
#[derive(Clone, Debug)]
pub struct EncodedSpan {
    /// The process attributes the span carries.
    process: Vec<KeyValue>,
    /// Tells processes apart: their attributes' JSON.
    process_key: String,
    span: otlp::Span,
}

impl EncodedSpan {
    pub fn new(span: &Span) -> EncodedSpan {
        let present = || {
            PROCESS_ATTRIBUTES
                .iter()
                .filter_map(|key| Some((*key, span.attribute(key)?)))
        };
        EncodedSpan {
            process: present()
                .map(|(key, value)| key_value(key, value))
                .collect(),
            process_key: present()
                .map(|(key, value)| format!("{key}={value};"))
                .collect(),
            span: otlp_span(span),
        }
    }

    /// The bytes it takes in a request.
    pub fn size(&self) -> usize {
        self.span.encoded_len()
    }
}

/// The attributes every resource carries: the configured ones and where the observer runs.
#[derive(Clone, Debug)]
pub struct BaseResource(Vec<KeyValue>);

impl BaseResource {
    /// `configured` (with `service.name`) over `host.name` (this host's name) and `os.type`.
    pub fn new(configured: &BTreeMap<String, String>) -> BaseResource {
        let mut attributes = BTreeMap::from([
            ("host.name".to_owned(), crate::callers::host_name()),
            ("os.type".to_owned(), "linux".to_owned()),
        ]);
        attributes.extend(configured.clone());
        BaseResource(
            attributes
                .iter()
                .map(|(key, value)| key_value(key, &Value::from(value.as_str())))
                .collect(),
        )
    }

    pub fn attributes(&self) -> &[KeyValue] {
        &self.0
    }
}

/// The instrumentation scope of everything the observer exports.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "observer".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// One request for `spans`, one ResourceSpans per process.
pub fn export_request(spans: &[EncodedSpan], base: &BaseResource) -> ExportTraceServiceRequest {
    let mut by_process: BTreeMap<&str, (&[KeyValue], Vec<otlp::Span>)> = BTreeMap::new();
    for encoded in spans {
        by_process
            .entry(&encoded.process_key)
            .or_insert_with(|| (&encoded.process, Vec::new()))
            .1
            .push(encoded.span.clone());
    }
    let resource_spans = by_process
        .into_values()
        .map(|(process, spans)| {
            let mut attributes = base.attributes().to_vec();
            attributes.retain(|kv| !process.iter().any(|p| p.key == kv.key));
            attributes.extend_from_slice(process);
            ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn otlp_span(span: &Span) -> otlp::Span {
    let status = span.gen_ai.error_type.as_ref().map(|error| otlp::Status {
        code: StatusCode::Error as i32,
        message: error.clone(),
    });
    otlp::Span {
        trace_id: hex_bytes(&span.trace_id),
        span_id: hex_bytes(&span.span_id),
        parent_span_id: span
            .parent_span_id
            .as_deref()
            .map(hex_bytes)
            .unwrap_or_default(),
        name: span.name.clone(),
        kind: match span.kind {
            crate::span::SpanKind::Client => SpanKind::Client,
            crate::span::SpanKind::Internal => SpanKind::Internal,
        } as i32,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes: span
            .flat_attributes()
            .map(|(key, value)| key_value(key, &value))
            .collect(),
        links: span
            .links
            .iter()
            .map(|link| otlp::span::Link {
                trace_id: hex_bytes(&link.trace_id),
                span_id: hex_bytes(&link.span_id),
                attributes: link
                    .attributes
                    .iter()
                    .map(|(key, value)| key_value(key, value))
                    .collect(),
                ..Default::default()
            })
            .collect(),
        status,
        ..Default::default()
    }
}

pub fn key_value(key: &str, value: &Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(any_value(value)),
        ..Default::default()
    }
}

/// JSON to OTLP: scalars as themselves, arrays of scalars as arrays (finish reasons, stop
/// sequences), and structured values (messages, tool definitions) as JSON strings, as the
/// GenAI conventions ask.
fn any_value(value: &Value) -> AnyValue {
    use any_value::Value as V;
    let value = match value {
        Value::String(s) => V::StringValue(s.clone()),
        Value::Bool(b) => V::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Array(items) if items.iter().all(is_scalar) => V::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect(),
        }),
        Value::Null | Value::Array(_) | Value::Object(_) => V::StringValue(value.to_string()),
    };
    AnyValue { value: Some(value) }
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Bool(_) | Value::Number(_))
}

/// Lowercase hex ids to bytes; an id that is not hex becomes empty (an invalid id in OTLP).
pub fn hex_bytes(hex: &str) -> Vec<u8> {
    if !hex.len().is_multiple_of(2) {
        return Vec::new();
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_default()
}
