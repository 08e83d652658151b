//! The span: one LLM call as the sinks see it.
use std::{borrow::Cow, net::SocketAddr};

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value, json};

use crate::{
    capture::TlsLibrary,
    http::Exchange,
    llm::{LlmCall, attr},
};

/// An OpenTelemetry span: the GenAI facts consumers read as typed fields, every other
/// attribute flat. The typed facts become attributes again only when the span is encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub gen_ai: GenAi,
    /// Every attribute but those in `gen_ai`.
    pub attributes: Map<String, Value>,
    /// Related spans that are not this one's parent, each with why (see `crate::link`).
    pub links: Vec<SpanLink>,
}

/// What consumers of spans read (the summary, the metrics, the live view, the store's columns),
/// typed; the conventions' attribute names are attached only when a span is encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenAi {
    pub provider: Option<String>,
    pub operation: Option<String>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// The class of error the call ended with (an HTTP status, a provider's error type).
    pub error_type: Option<String>,
    /// Seconds from the request's end to the first streamed output.
    pub time_to_first_chunk: Option<f64>,
    pub cost_usd: Option<f64>,
}

impl GenAi {
    /// Takes the typed facts out of flat attributes (as the llm stage or the store has them);
    /// a value of another type than expected stays an ordinary attribute.
    pub fn take_from(attributes: &mut Map<String, Value>) -> GenAi {
        fn take<T>(
            attributes: &mut Map<String, Value>,
            key: &str,
            read: impl Fn(&Value) -> Option<T>,
        ) -> Option<T> {
            let value = read(attributes.get(key)?)?;
            attributes.remove(key);
            Some(value)
        }
        let text = |value: &Value| value.as_str().map(str::to_owned);
        GenAi {
            provider: take(attributes, attr::PROVIDER_NAME, text),
            operation: take(attributes, attr::OPERATION_NAME, text),
            request_model: take(attributes, attr::REQUEST_MODEL, text),
            response_model: take(attributes, attr::RESPONSE_MODEL, text),
            input_tokens: take(attributes, attr::USAGE_INPUT_TOKENS, Value::as_u64),
            output_tokens: take(attributes, attr::USAGE_OUTPUT_TOKENS, Value::as_u64),
            error_type: take(attributes, attr::ERROR_TYPE, text),
            time_to_first_chunk: take(
                attributes,
                attr::RESPONSE_TIME_TO_FIRST_CHUNK,
                Value::as_f64,
            ),
            cost_usd: take(attributes, attr::OBSERVER_COST_USD, Value::as_f64),
        }
    }

    /// The facts as attributes, named as the conventions name them.
    pub fn attributes(&self) -> impl Iterator<Item = (&'static str, Value)> + '_ {
        let text = |value: &Option<String>| value.as_deref().map(Value::from);
        [
            (attr::PROVIDER_NAME, text(&self.provider)),
            (attr::OPERATION_NAME, text(&self.operation)),
            (attr::REQUEST_MODEL, text(&self.request_model)),
            (attr::RESPONSE_MODEL, text(&self.response_model)),
            (attr::USAGE_INPUT_TOKENS, self.input_tokens.map(Value::from)),
            (
                attr::USAGE_OUTPUT_TOKENS,
                self.output_tokens.map(Value::from),
            ),
            (attr::ERROR_TYPE, text(&self.error_type)),
            (
                attr::RESPONSE_TIME_TO_FIRST_CHUNK,
                self.time_to_first_chunk.map(Value::from),
            ),
            (attr::OBSERVER_COST_USD, self.cost_usd.map(Value::from)),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
    }

    /// The model that answered, else the one asked for.
    pub fn model(&self) -> Option<&str> {
        self.response_model
            .as_deref()
            .or(self.request_model.as_deref())
    }
}

/// CLIENT for a call the process made; INTERNAL for what the link stage infers around calls
/// (an agent run's root, a tool's execution).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanKind {
    #[default]
    Client,
    Internal,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Client => "CLIENT",
            SpanKind::Internal => "INTERNAL",
        }
    }

    pub fn parse(name: &str) -> SpanKind {
        match name {
            "INTERNAL" => SpanKind::Internal,
            _ => SpanKind::Client,
        }
    }
}

/// A link to another span, with attributes saying how the two relate.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Map<String, Value>,
}

impl SpanLink {
    pub fn to_json(&self) -> Value {
        json!({"trace_id": self.trace_id, "span_id": self.span_id, "attributes": self.attributes})
    }

    pub fn from_json(value: &Value) -> Option<SpanLink> {
        Some(SpanLink {
            trace_id: value.get("trace_id")?.as_str()?.to_owned(),
            span_id: value.get("span_id")?.as_str()?.to_owned(),
            attributes: value
                .get("attributes")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// One JSON object: the span's identity and times, then every attribute (the typed facts
/// first) as a top-level key. Written straight from the span (no copy of its attributes into a
/// `Value` first); an attribute named like one of the span's own fields takes that field's
/// place, as in a JSON object built by inserting the fields and then the attributes.
impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let links = (!self.links.is_empty())
            .then(|| Value::Array(self.links.iter().map(SpanLink::to_json).collect()));
        let fields = [
            ("trace_id", json!(self.trace_id)),
            ("span_id", json!(self.span_id)),
            ("parent_span_id", json!(self.parent_span_id)),
            ("name", json!(self.name)),
            ("kind", json!(self.kind.as_str())),
            ("start_time_unix_nano", json!(self.start_time_unix_nano)),
            ("end_time_unix_nano", json!(self.end_time_unix_nano)),
        ];
        let fields: Vec<(&str, &Value)> = fields
            .iter()
            .map(|(key, value)| (*key, value))
            .chain(links.iter().map(|links| ("links", links)))
            .collect();
        let mut map = serializer.serialize_map(None)?;
        for &(key, value) in &fields {
            map.serialize_entry(key, self.attributes.get(key).unwrap_or(value))?;
        }
        for (key, value) in self.gen_ai.attributes() {
            map.serialize_entry(key, &value)?;
        }
        for (key, value) in &self.attributes {
            if !fields.iter().any(|(field, _)| field == key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl Span {
    /// An attribute other than the typed facts (those are in [`Span::gen_ai`]).
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// Every attribute, the typed facts included, as the encodings write them.
    pub fn flat_attributes(&self) -> impl Iterator<Item = (&str, Cow<'_, Value>)> {
        let typed = self
            .gen_ai
            .attributes()
            .map(|(key, value)| (key, Cow::Owned(value)));
        let others = self
            .attributes
            .iter()
            .map(|(key, value)| (key.as_str(), Cow::Borrowed(value)));
        typed.chain(others)
    }

    /// [`Span::flat_attributes`] as one JSON object.
    pub fn flat_attribute_map(&self) -> Map<String, Value> {
        self.flat_attributes()
            .map(|(key, value)| (key.to_owned(), value.into_owned()))
            .collect()
    }

    /// One attribute, typed facts included, as [`Span::flat_attributes`] has it.
    pub fn flat_attribute(&self, key: &str) -> Option<Cow<'_, Value>> {
        match self.attributes.get(key) {
            Some(value) => Some(Cow::Borrowed(value)),
            None => self
                .gen_ai
                .attributes()
                .find(|(typed, _)| *typed == key)
                .map(|(_, value)| Cow::Owned(value)),
        }
    }

    /// [`Span::flat_attributes`] written as one JSON object, without copying them first.
    pub fn flat_attributes_json(&self) -> serde_json::Result<String> {
        struct Flat<'a>(&'a Span);
        impl Serialize for Flat<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.flat_attributes())
            }
        }
        serde_json::to_string(&Flat(self))
    }

    /// An LLM call the process made, as opposed to a span the link stage inferred or a request
    /// of another protocol (MCP) the process made.
    pub fn is_call(&self) -> bool {
        self.kind == SpanKind::Client && self.gen_ai.provider.is_some()
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }
}

/// What the pipeline knows about a traced process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub executable_path: String,
    pub comm: String,
    pub container_id: Option<String>,
}

/// The two ends of a connection's socket, when the capture tied the connection to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

impl ProcessInfo {
    /// The program's file name; the kernel's 15-byte command name when the path is unknown.
    pub fn executable_name(&self) -> &str {
        match self.executable_path.rsplit('/').next() {
            Some(name) if !name.is_empty() => name,
            _ => &self.comm,
        }
    }
}

/// A span without trace identity yet: the call, its HTTP facts, its process and its socket.
pub fn build(
    exchange: &Exchange,
    call: LlmCall,
    process: &ProcessInfo,
    endpoints: Option<&Endpoints>,
) -> Span {
    let request = &exchange.request;
    let end = exchange
        .response
        .as_ref()
        .map_or(request.ts_end, |r| r.ts_end)
        .max(request.ts_start);
    let mut attributes = call.attributes;
    let mut set = |key: &str, value: Value| {
        attributes.entry(key.to_string()).or_insert(value);
    };
    set(attr::PROVIDER_NAME, json!(call.provider));
    set(attr::OPERATION_NAME, json!(call.operation));
    if let Some(model) = &call.request_model {
        set(attr::REQUEST_MODEL, json!(model));
    }
    let peer = endpoints.and_then(|e| e.peer);
    let default_port = if exchange.library == TlsLibrary::Plaintext {
        80
    } else {
        443
    };
    let (host, port) = server_address(request.headers.get("host"));
    // The Host header names the server as the client meant it; the socket says where it went.
    let port = port
        .or(peer.map(|p| p.port()))
        .or(host.is_some().then_some(default_port));
    if let Some(host) = host.or_else(|| peer.map(|p| p.ip().to_string())) {
        set(attr::SERVER_ADDRESS, json!(host));
    }
    if let Some(port) = port {
        set(attr::SERVER_PORT, json!(port));
    }
    if let Some(peer) = peer {
        set(attr::NETWORK_PEER_ADDRESS, json!(peer.ip().to_string()));
        set(attr::NETWORK_PEER_PORT, json!(peer.port()));
    }
    if let Some(local) = endpoints.and_then(|e| e.local) {
        set(attr::NETWORK_LOCAL_ADDRESS, json!(local.ip().to_string()));
        set(attr::NETWORK_LOCAL_PORT, json!(local.port()));
    }
    let path = request.target.split(['?', '#']).next().unwrap_or_default();
    set(attr::URL_PATH, json!(path));
    set(attr::HTTP_REQUEST_METHOD, json!(request.method));
    if let Some(response) = &exchange.response {
        set(attr::HTTP_RESPONSE_STATUS_CODE, json!(response.status));
        if response.status >= 400 {
            set(attr::ERROR_TYPE, json!(response.status.to_string()));
        }
    }
    set(attr::PROCESS_PID, json!(exchange.conn.pid));
    set(attr::THREAD_ID, json!(exchange.tid));
    set(
        attr::PROCESS_EXECUTABLE_NAME,
        json!(process.executable_name()),
    );
    if !process.executable_path.is_empty() {
        set(
            attr::PROCESS_EXECUTABLE_PATH,
            json!(process.executable_path),
        );
    }
    if let Some(container) = &process.container_id {
        set(attr::CONTAINER_ID, json!(container));
    }
    set(attr::OBSERVER_TLS_LIBRARY, json!(exchange.library.as_str()));
    let name = match &call.request_model {
        Some(model) => format!("{} {model}", call.operation),
        None => call.operation.clone(),
    };
    Span {
        trace_id: String::new(),
        span_id: String::new(),
        parent_span_id: None,
        name,
        kind: SpanKind::Client,
        start_time_unix_nano: request.ts_start,
        end_time_unix_nano: end,
        gen_ai: GenAi::take_from(&mut attributes),
        attributes,
        links: Vec::new(),
    }
}

/// Host and port from a Host header; the port only when the header names one.
fn server_address(host_header: Option<&str>) -> (Option<String>, Option<u16>) {
    let Some(host) = host_header.map(str::trim).filter(|h| !h.is_empty()) else {
        return (None, None);
    };
    // "[::1]:8443", "example.com:443", "example.com"
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            (name, port.parse().ok())
        }
        _ => (host, None),
    };
    (
        Some(
            name.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        ),
        port,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_headers() {
        assert_eq!(
            server_address(Some("api.openai.com")),
            (Some("api.openai.com".into()), None)
        );
        assert_eq!(
            server_address(Some("127.0.0.1:8443")),
            (Some("127.0.0.1".into()), Some(8443))
        );
        assert_eq!(
            server_address(Some("[::1]:9000")),
            (Some("::1".into()), Some(9000))
        );
        assert_eq!(server_address(None), (None, None));
    }
}
