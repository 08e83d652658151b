//! Builders for the OpenTelemetry GenAI content schema: messages (`{role, parts, finish_reason}`),
//! their parts, and tool definitions. Providers map their wire shapes onto these.
use serde_json::{Map, Value, json};

use super::json::str_at;
use super::{LlmCall, attr};

pub(crate) fn text_part(content: &str) -> Value {
    json!({"type": "text", "content": content})
}

pub(crate) fn reasoning_part(content: &str) -> Value {
    json!({"type": "reasoning", "content": content})
}

pub(crate) fn tool_call_part(id: Option<&str>, name: Option<&str>, arguments: Value) -> Value {
    json!({"type": "tool_call", "id": id, "name": name, "arguments": arguments})
}

pub(crate) fn tool_call_response_part(id: Option<&str>, response: Value) -> Value {
    json!({"type": "tool_call_response", "id": id, "response": response})
}

/// A part we do not carry the content of (images, audio, server tools): its kind only.
pub(crate) fn opaque_part(kind: &str) -> Value {
    json!({ "type": kind })
}

/// Parts of a content field that is either a plain string or a list of typed blocks.
/// Empty strings carry nothing and are dropped.
pub(crate) fn content_parts(
    content: Option<&Value>,
    block_part: fn(&Value) -> Value,
) -> Vec<Value> {
    match content {
        Some(Value::String(text)) if !text.is_empty() => vec![text_part(text)],
        Some(Value::Array(blocks)) => blocks.iter().map(block_part).collect(),
        _ => Vec::new(),
    }
}

/// A block holding plain text (`text`, `input_text`, `output_text`) becomes a text part;
/// anything else keeps its kind only.
pub(crate) fn text_block_part(block: &Value) -> Value {
    let kind = str_at(block, "type").unwrap_or("unknown");
    match str_at(block, "text") {
        Some(text) if kind.ends_with("text") => text_part(text),
        _ => opaque_part(kind),
    }
}

pub(crate) fn input_message(role: &str, parts: Vec<Value>) -> Value {
    json!({"role": role, "parts": parts})
}

/// An output message; a message whose finish reason never arrived (a cut-off stream) ended in "error".
pub(crate) fn output_message(role: &str, parts: Vec<Value>, finish_reason: Option<&str>) -> Value {
    json!({"role": role, "parts": parts, "finish_reason": finish_reason.unwrap_or("error")})
}

/// Tool-call arguments travel as JSON text: keep them structured when they parse
/// (so streamed and whole responses agree), as the raw text when they do not.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw))
}

/// `{type, name, description, parameters}` from a provider's tool description, whose
/// parameter schema sits under `parameters_key`.
pub(crate) fn tool_definition(kind: &str, spec: &Value, parameters_key: &str) -> Value {
    let mut definition = Map::new();
    definition.insert("type".into(), kind.into());
    for (from, to) in [
        ("name", "name"),
        ("description", "description"),
        (parameters_key, "parameters"),
    ] {
        if let Some(value) = spec.get(from) {
            definition.insert(to.into(), value.clone());
        }
    }
    Value::Object(definition)
}

/// The assistant's reply, from content blocks in the provider's own shape, and its stop reason.
pub(crate) fn record_assistant_output(
    call: &mut LlmCall,
    blocks: &[Value],
    stop_reason: Option<&str>,
    block_part: fn(&Value) -> Value,
) {
    if let Some(reason) = stop_reason {
        call.set(attr::RESPONSE_FINISH_REASONS, vec![reason]);
    }
    if blocks.is_empty() && stop_reason.is_none() {
        return;
    }
    let parts = blocks.iter().map(block_part).collect();
    call.set(
        attr::OUTPUT_MESSAGES,
        vec![output_message("assistant", parts, stop_reason)],
    );
}
