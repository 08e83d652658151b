//! Spans to an OpenTelemetry collector or backend: OTLP/HTTP with protobuf bodies, gzipped,
//! batched on the sink's own thread, retried with exponential backoff when the receiver is
//! busy or unreachable.
use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    time::Duration,
};

use flate2::{Compression, write::GzEncoder};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{self as otlp, ResourceSpans, ScopeSpans, span::SpanKind, status::StatusCode},
};
use prost::Message;
use serde_json::Value;

use super::background::{BackgroundSink, BatchPolicy, BatchWriter};
use crate::{config::OtlpConfig, llm::attr, span::Span};

/// How the exporter batches, retries and waits: fixed in the observer, quicker in tests.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    pub batch: BatchPolicy,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            batch: BatchPolicy {
                queue: 10_000,
                max_spans: 512,
                max_delay: Duration::from_secs(2),
            },
            retry: RetryPolicy {
                attempts: 5,
                first_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(30),
            },
            timeout: Duration::from_secs(10),
        }
    }
}

/// The service.name of exported spans when the configuration names none.
const DEFAULT_SERVICE_NAME: &str = "observer";

impl OtlpConfig {
    /// A sink exporting to the configured receiver.
    pub fn build(&self) -> anyhow::Result<BackgroundSink> {
        otlp_sink(self, Delivery::default())
    }
}

fn otlp_sink(config: &OtlpConfig, delivery: Delivery) -> anyhow::Result<BackgroundSink> {
    let agent_config = ureq::Agent::config_builder()
        .timeout_global(Some(delivery.timeout))
        .http_status_as_error(false)
        .build();
    let exporter = Exporter {
        agent: ureq::Agent::new_with_config(agent_config),
        url: traces_url(&config.endpoint),
        headers: config.headers.clone(),
        service_name: config
            .service_name
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string()),
        host_name: crate::callers::host_name(),
        retry: delivery.retry,
        containers: HashMap::new(),
    };
    BackgroundSink::start("otlp", exporter, delivery.batch)
}

fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

struct Exporter {
    agent: ureq::Agent,
    url: String,
    /// Sent with every request, e.g. `authorization: Bearer …`.
    headers: BTreeMap<String, String>,
    service_name: String,
    host_name: String,
    retry: RetryPolicy,
    /// Container ids by pid, looked up once per process.
    containers: HashMap<i64, Option<String>>,
}

/// Processes whose container is remembered at most (forgotten all at once past this).
const MAX_CONTAINERS: usize = 4096;

/// How one POST went.
enum Outcome {
    Sent,
    /// Worth another try (429, 5xx, no connection), after the receiver's Retry-After if given.
    Retry(String, Option<Duration>),
    /// The receiver refused the data itself (a 4xx): sending it again would not help.
    Rejected(String),
}

impl BatchWriter for Exporter {
    fn write_batch(&mut self, spans: Vec<Span>) {
        let containers = self.containers_of(&spans);
        let request = export_request(&spans, &self.service_name, &self.host_name, &containers);
        let body = match gzip(&request.encode_to_vec()) {
            Ok(body) => body,
            Err(error) => {
                log::error!("otlp: compressing {} spans failed: {error}", spans.len());
                return;
            }
        };
        let retry = self.retry;
        let mut backoff = retry.first_backoff;
        for attempt in 1..=retry.attempts {
            let problem = match self.post(&body) {
                Outcome::Sent => return,
                Outcome::Rejected(reason) => {
                    log::error!("otlp: {} refused {} spans: {reason}", self.url, spans.len());
                    return;
                }
                Outcome::Retry(reason, retry_after) => {
                    if attempt < retry.attempts {
                        std::thread::sleep(retry_after.unwrap_or(backoff).min(retry.max_backoff));
                        backoff = (backoff * 2).min(retry.max_backoff);
                    }
                    reason
                }
            };
            log::debug!("otlp: attempt {attempt} to {} failed: {problem}", self.url);
        }
        log::error!(
            "otlp: {} spans lost: {} did not accept them after {} attempts; check the endpoint \
             and that the collector is up",
            spans.len(),
            self.url,
            retry.attempts
        );
    }
}

impl Exporter {
    /// The containers of the spans' processes, where they run in one.
    fn containers_of(&mut self, spans: &[Span]) -> HashMap<i64, String> {
        if self.containers.len() >= MAX_CONTAINERS {
            self.containers.clear();
        }
        let mut found = HashMap::new();
        for span in spans {
            let Some(pid) = span.attribute(attr::PROCESS_PID).and_then(Value::as_i64) else {
                continue;
            };
            let executable = span
                .attribute(attr::PROCESS_EXECUTABLE_NAME)
                .and_then(Value::as_str);
            let id = self
                .containers
                .entry(pid)
                .or_insert_with(|| container_id(pid, executable));
            if let Some(id) = id {
                found.insert(pid, id.clone());
            }
        }
        found
    }

    fn post(&self, body: &[u8]) -> Outcome {
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        match request.send(body) {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                    .map(Duration::from_secs);
                match status {
                    200..=299 => Outcome::Sent,
                    429 | 500..=599 => Outcome::Retry(format!("HTTP {status}"), retry_after),
                    _ => Outcome::Rejected(format!("HTTP {status}")),
                }
            }
            Err(error) => Outcome::Retry(error.to_string(), None),
        }
    }
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Spans grouped into one ResourceSpans per process: the resource says which process made
/// the calls (plus service.name and host.name), the spans keep their process.* attributes too.
pub fn export_request(
    spans: &[Span],
    service_name: &str,
    host_name: &str,
    containers: &HashMap<i64, String>,
) -> ExportTraceServiceRequest {
    let mut by_process: BTreeMap<Option<i64>, Vec<&Span>> = BTreeMap::new();
    for span in spans {
        let pid = span.attribute(attr::PROCESS_PID).and_then(Value::as_i64);
        by_process.entry(pid).or_default().push(span);
    }
    let scope = InstrumentationScope {
        name: "observer".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let resource_spans = by_process
        .into_iter()
        .map(|(pid, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: resource_attributes(
                    spans[0],
                    service_name,
                    host_name,
                    pid.and_then(|pid| containers.get(&pid)),
                ),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope.clone()),
                spans: spans.into_iter().map(otlp_span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn resource_attributes(
    span: &Span,
    service_name: &str,
    host_name: &str,
    container_id: Option<&String>,
) -> Vec<KeyValue> {
    let mut attributes = vec![
        key_value("service.name", &Value::from(service_name)),
        key_value("host.name", &Value::from(host_name)),
        key_value("os.type", &Value::from("linux")),
    ];
    for key in [
        attr::PROCESS_PID,
        attr::PROCESS_EXECUTABLE_NAME,
        attr::PROCESS_EXECUTABLE_PATH,
    ] {
        if let Some(value) = span.attribute(key) {
            attributes.push(key_value(key, value));
        }
    }
    if let Some(id) = container_id {
        attributes.push(key_value(attr::CONTAINER_ID, &Value::from(id.as_str())));
    }
    attributes
}

/// The container process `pid` runs in, from its cgroup path. Only while the process is the
/// one the span names (a replayed recording's pids are not this host's processes).
fn container_id(pid: i64, executable: Option<&str>) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_str()?;
    // The kernel marks a replaced executable " (deleted)".
    if executable? != name.trim_end_matches(" (deleted)") {
        return None;
    }
    container_id_in(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The 64-hex container id in a `/proc/PID/cgroup` text: a path segment that is the id, or
/// the id wrapped by a runtime (`docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`,
/// `libpod-ID.scope`).
fn container_id_in(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .map(|segment| {
            let segment = segment.trim_end_matches(".scope");
            segment.rsplit('-').next().unwrap_or(segment)
        })
        .find(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
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

fn key_value(key: &str, value: &Value) -> KeyValue {
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
fn hex_bytes(hex: &str) -> Vec<u8> {
    if !hex.len().is_multiple_of(2) {
        return Vec::new();
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
