//! The span: one LLM call as the sinks see it.
use std::net::SocketAddr;

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value, json};

use crate::{capture::TlsLibrary, http::Exchange, llm::LlmCall};

/// An OpenTelemetry span, with its attributes flat.
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
    pub attributes: Map<String, Value>,
    /// Related spans that are not this one's parent, each with why (see `crate::link`).
    pub links: Vec<SpanLink>,
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

/// One JSON object: the span's identity and times, then every attribute as a top-level key.
/// Written straight from the span (no copy of its attributes into a `Value` first); an attribute
/// named like one of the span's own fields takes that field's place, as in a JSON object built
/// by inserting the fields and then the attributes.
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
        for (key, value) in &self.attributes {
            if !fields.iter().any(|(field, _)| field == key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// A call the process made, as opposed to a span the link stage inferred.
    pub fn is_call(&self) -> bool {
        self.kind == SpanKind::Client
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
    set("gen_ai.provider.name", json!(call.provider));
    set("gen_ai.operation.name", json!(call.operation));
    if let Some(model) = &call.request_model {
        set("gen_ai.request.model", json!(model));
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
        set("server.address", json!(host));
    }
    if let Some(port) = port {
        set("server.port", json!(port));
    }
    if let Some(peer) = peer {
        set("network.peer.address", json!(peer.ip().to_string()));
        set("network.peer.port", json!(peer.port()));
    }
    if let Some(local) = endpoints.and_then(|e| e.local) {
        set("network.local.address", json!(local.ip().to_string()));
        set("network.local.port", json!(local.port()));
    }
    let path = request.target.split(['?', '#']).next().unwrap_or_default();
    set("url.path", json!(path));
    set("http.request.method", json!(request.method));
    if let Some(response) = &exchange.response {
        set("http.response.status_code", json!(response.status));
        if response.status >= 400 {
            set("error.type", json!(response.status.to_string()));
        }
    }
    set("process.pid", json!(exchange.conn.pid));
    set("thread.id", json!(exchange.tid));
    set("process.executable.name", json!(process.executable_name()));
    if !process.executable_path.is_empty() {
        set("process.executable.path", json!(process.executable_path));
    }
    if let Some(container) = &process.container_id {
        set("container.id", json!(container));
    }
    set("observer.tls.library", json!(exchange.library.as_str()));
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
