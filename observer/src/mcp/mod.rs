//! The MCP stage, beside the LLM stage: Model Context Protocol requests an agent makes (JSON-RPC
//! 2.0), read into [`McpCall`]s, one per request paired with its response by id (a
//! notification, which has no response, alone).
//!
//! Two transports: streamable HTTP ([`recognise`]: a `POST` whose body is JSON-RPC; the response
//! a JSON body or an event stream of JSON-RPC messages), and stdio ([`StdioStage`]: the
//! newline-delimited messages on the pipes between an agent and an MCP server it started).
//! [`McpCall::span`] makes the span the conventions describe (`{mcp.method.name} {target}`,
//! CLIENT); the link stage places it in the agent's run, under the tool call it carries out.
mod stdio;

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::{
    config::ContentMode,
    http::{Exchange, Request},
    llm::{attr, framing::sse},
    span::{Endpoints, GenAi, ProcessInfo, Span, SpanKind},
};

pub use self::stdio::{StdioStage, StdioStats};

/// Methods of the Model Context Protocol a client sends (notifications aside).
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "roots/list",
    "sampling/createMessage",
    "elicitation/create",
];

/// Requests awaiting their response in one stdio session; past this the oldest are dropped
/// (and counted).
const MAX_PENDING: usize = 1024;

/// How the messages travelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP (or plain HTTP POSTs of JSON-RPC).
    Http,
    /// The standard input and output of a server process: pipes.
    #[default]
    Pipe,
}

/// One MCP request and its response (or a notification).
#[derive(Clone, Debug, PartialEq)]
pub struct McpCall {
    pub method: String,
    /// `jsonrpc.request.id`, as written (a number or a string); none for a notification.
    pub id: Option<String>,
    pub params: Value,
    pub result: Option<Value>,
    /// The JSON-RPC error: its code and message.
    pub error: Option<(i64, String)>,
    /// When the request was sent, and when its response (or, for a notification, the request)
    /// was complete, Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub transport: Transport,
    /// The response never came (the connection or the session ended first).
    pub unanswered: bool,
}

impl McpCall {
    /// The tool a `tools/call` calls.
    pub fn tool_name(&self) -> Option<&str> {
        (self.method == "tools/call")
            .then(|| self.params.get("name")?.as_str())
            .flatten()
    }

    /// What the request is about: the tool, the prompt, or the resource.
    fn target(&self) -> Option<&str> {
        match self.method.as_str() {
            "tools/call" | "prompts/get" => self.params.get("name")?.as_str(),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.params.get("uri")?.as_str()
            }
            _ => None,
        }
    }

    /// The arguments a `tools/call` passes.
    pub fn tool_arguments(&self) -> Option<&Value> {
        self.tool_name()?;
        self.params.get("arguments")
    }

    /// The call as a span (no trace identity yet): what the conventions name, and the process
    /// and socket it was made from. Arguments and results only with `--content full`.
    pub fn span(
        &self,
        process: &ProcessInfo,
        endpoints: Option<&Endpoints>,
        pid: u32,
        content: ContentMode,
    ) -> Span {
        let mut attributes = Map::new();
        let mut set = |key: &str, value: Value| {
            attributes.insert(key.into(), value);
        };
        set(attr::MCP_METHOD_NAME, json!(self.method));
        if let Some(id) = &self.id {
            set(attr::JSONRPC_REQUEST_ID, json!(id));
        }
        if let Some(session) = &self.session_id {
            set(attr::MCP_SESSION_ID, json!(session));
        }
        if let Some(version) = &self.protocol_version {
            set(attr::MCP_PROTOCOL_VERSION, json!(version));
        }
        if let Some(tool) = self.tool_name() {
            set(attr::TOOL_NAME, json!(tool));
            set(attr::OPENINFERENCE_SPAN_KIND, json!("TOOL"));
        } else {
            set(attr::OPENINFERENCE_SPAN_KIND, json!("CHAIN"));
        }
        if self.method.starts_with("resources/")
            && let Some(uri) = self.params.get("uri")
        {
            set(attr::MCP_RESOURCE_URI, uri.clone());
        }
        match self.transport {
            Transport::Pipe => set(attr::NETWORK_TRANSPORT, json!("pipe")),
            Transport::Http => {
                set(attr::NETWORK_TRANSPORT, json!("tcp"));
                set(attr::NETWORK_PROTOCOL_NAME, json!("http"));
            }
        }
        if let Some(peer) = endpoints.and_then(|e| e.peer) {
            set(attr::SERVER_ADDRESS, json!(peer.ip().to_string()));
            set(attr::SERVER_PORT, json!(peer.port()));
        }
        set(attr::PROCESS_PID, json!(pid));
        set(
            attr::PROCESS_EXECUTABLE_NAME,
            json!(process.executable_name()),
        );
        if content == ContentMode::Full {
            if let Some(arguments) = self.tool_arguments() {
                set(attr::TOOL_CALL_ARGUMENTS, arguments.clone());
            }
            if self.tool_name().is_some()
                && let Some(result) = &self.result
            {
                set(attr::TOOL_CALL_RESULT, result.clone());
            }
        }
        let error_type = match (&self.error, &self.result) {
            (Some((code, _)), _) => {
                set(attr::RPC_RESPONSE_STATUS_CODE, json!(code.to_string()));
                Some(code.to_string())
            }
            // A tool that ran and failed answers with a result marked as an error.
            (None, Some(result)) if result.get("isError") == Some(&Value::Bool(true)) => {
                Some("tool_error".to_owned())
            }
            (None, None) if self.unanswered => Some("unanswered".to_owned()),
            _ => None,
        };
        Span {
            trace_id: String::new(),
            span_id: String::new(),
            parent_span_id: None,
            name: match self.target() {
                Some(target) => format!("{} {target}", self.method),
                None => self.method.clone(),
            },
            kind: SpanKind::Client,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end.max(self.start),
            gen_ai: GenAi {
                operation: self.tool_name().map(|_| "execute_tool".to_owned()),
                error_type,
                ..GenAi::default()
            },
            attributes,
            links: Vec::new(),
        }
    }
}

/// Whether a request is an MCP request over HTTP: a `POST` of a JSON-RPC message. Its response
/// is worth reading.
pub fn is_mcp_request(request: &Request) -> bool {
    let body = &request.body.data;
    // A cheap look first: only bodies that mention `jsonrpc` early are parsed.
    request.method == "POST"
        && memchr::memmem::find(&body[..body.len().min(512)], b"jsonrpc").is_some()
        && jsonrpc_messages(body).iter().any(is_mcp_message)
}

/// The MCP requests (and notifications) of an HTTP exchange, each paired with its response.
pub fn recognise(exchange: &Exchange) -> Vec<McpCall> {
    let request = &exchange.request;
    if request.method != "POST" {
        return Vec::new();
    }
    let messages = jsonrpc_messages(&request.body.data);
    if !messages.iter().any(is_mcp_message) {
        return Vec::new();
    }
    let header = |name: &str| request.headers.get(name).map(str::to_owned);
    let response = exchange.response.as_ref();
    let session_id = header("mcp-session-id")
        .or_else(|| response.and_then(|r| r.headers.get("mcp-session-id").map(str::to_owned)));
    let mut session = Session {
        transport: Transport::Http,
        session_id,
        protocol_version: header("mcp-protocol-version"),
        ..Session::default()
    };
    let mut calls = Vec::new();
    for message in &messages {
        session.message(Direction::Sent, request.ts_start, message, &mut calls);
    }
    if let Some(response) = response {
        let body = &response.body;
        let streamed = response
            .headers
            .get("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let mut received = |data: &[u8], at: usize| {
            let ts = body.time_at(at).unwrap_or(response.ts_end);
            for message in jsonrpc_messages(data) {
                session.message(Direction::Received, ts, &message, &mut calls);
            }
        };
        if streamed {
            for event in sse::events(&body.data) {
                received(event.data.as_bytes(), event.completed_at);
            }
        } else if !body.data.is_empty() {
            received(&body.data, body.data.len().saturating_sub(1));
        }
    }
    let end = response.map_or(request.ts_end, |r| r.ts_end);
    calls.extend(session.finish(end));
    calls
}

/// Which way a message went, seen from the client (the agent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// One client's MCP session: requests sent, waiting for their responses.
#[derive(Default)]
pub struct Session {
    pub transport: Transport,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    pending: HashMap<String, McpCall>,
    order: VecDeque<String>,
    /// Requests dropped waiting (past `MAX_PENDING`).
    pub dropped: u64,
}

impl Session {
    /// One JSON-RPC message: a request or notification the client sent, or a response (to a
    /// request of the client's) it received. Requests the server sends the client (sampling,
    /// roots) are not followed.
    pub fn message(
        &mut self,
        direction: Direction,
        ts: u64,
        message: &Value,
        out: &mut Vec<McpCall>,
    ) {
        let id = message.get("id").filter(|id| !id.is_null()).map(id_text);
        let method = message.get("method").and_then(Value::as_str);
        match (direction, method, id) {
            (Direction::Sent, Some(method), id) => {
                let params = message.get("params").cloned().unwrap_or(Value::Null);
                if method == "initialize" && self.protocol_version.is_none() {
                    self.protocol_version = params
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                let call = McpCall {
                    method: method.to_owned(),
                    id: id.clone(),
                    params,
                    result: None,
                    error: None,
                    start: ts,
                    end: ts,
                    session_id: self.session_id.clone(),
                    protocol_version: self.protocol_version.clone(),
                    transport: self.transport,
                    unanswered: false,
                };
                match id {
                    None => out.push(call),
                    Some(id) => self.wait(id, call),
                }
            }
            (Direction::Received, None, Some(id)) => {
                let Some(mut call) = self.pending.remove(&id) else {
                    return; // a response to a request sent before we looked
                };
                call.end = ts;
                call.result = message.get("result").cloned();
                call.error = message.get("error").map(|error| {
                    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
                    let text = error.get("message").and_then(Value::as_str);
                    (code, text.unwrap_or_default().to_owned())
                });
                if call.method == "initialize"
                    && let Some(version) = call
                        .result
                        .as_ref()
                        .and_then(|r| r.get("protocolVersion")?.as_str())
                {
                    self.protocol_version = Some(version.to_owned());
                    call.protocol_version = Some(version.to_owned());
                }
                out.push(call);
            }
            _ => {}
        }
    }

    fn wait(&mut self, id: String, call: McpCall) {
        if self.pending.insert(id.clone(), call).is_none() {
            self.order.push_back(id);
        }
        while self.pending.len() > MAX_PENDING {
            match self.order.pop_front() {
                Some(oldest) if self.pending.remove(&oldest).is_some() => self.dropped += 1,
                Some(_) => {}
                None => break,
            }
        }
        if self.order.len() > 2 * MAX_PENDING {
            self.order.retain(|id| self.pending.contains_key(id));
        }
    }

    /// The session ended at `ts`: its requests still waiting, marked unanswered.
    pub fn finish(&mut self, ts: u64) -> Vec<McpCall> {
        self.order.clear();
        let mut calls: Vec<McpCall> = self
            .pending
            .drain()
            .map(|(_, mut call)| {
                call.end = ts.max(call.start);
                call.unanswered = true;
                call
            })
            .collect();
        calls.sort_by_key(|call| call.start);
        calls
    }
}

/// A JSON-RPC id as text: `7`, or `"abc"` as `abc`.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn is_mcp_message(message: &Value) -> bool {
    message.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && message
            .get("method")
            .and_then(Value::as_str)
            .is_some_and(|method| METHODS.contains(&method) || method.starts_with("notifications/"))
}

/// The JSON-RPC messages of a body: one object, or a batch (an array of them).
fn jsonrpc_messages(body: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(batch)) => batch.into_iter().filter(Value::is_object).collect(),
        Ok(message @ Value::Object(_)) => vec![message],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
