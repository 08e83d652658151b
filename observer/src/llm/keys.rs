//! What the link stage needs to place a call in its conversation, read here once: ids, and
//! canonical hashes of the messages. Computed from the provider-neutral messages
//! (`gen_ai.input.messages` / `gen_ai.output.messages`), so every provider that fills them is
//! linkable without the link stage knowing any wire format.
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use super::{LlmCall, attr};
use crate::http::Headers;

/// Request headers that name a session or conversation, as agent frameworks and gateways send them.
const SESSION_HEADERS: &[&str] = &[
    "x-session-id",
    "session-id",
    "session_id",
    "x-conversation-id",
    "conversation-id",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkKeys {
    /// The response's id (`gen_ai.response.id`).
    pub response_id: Option<String>,
    /// The Responses API's `previous_response_id`: this call continues that response.
    pub previous_response_id: Option<String>,
    /// The conversation or session the request names explicitly (a body field or a header).
    pub conversation_id: Option<String>,
    /// Canonical hashes of the input messages, system and developer messages left out (a
    /// changed system prompt does not make another conversation).
    pub input: Vec<u64>,
    /// Canonical hashes of the output messages, comparable with `input` of the next request.
    pub output: Vec<u64>,
    /// The input is one user message and nothing else: a conversation starts here.
    pub starts_conversation: bool,
    /// Tool calls the output asks for.
    pub tool_calls: Vec<ToolCallKey>,
    /// Ids of tool calls whose results the input carries.
    pub tool_results: Vec<String>,
    /// The request's W3C `traceparent` header: the application traces this call itself.
    pub traceparent: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCallKey {
    pub id: String,
    pub name: Option<String>,
    /// What the model asked the tool to do: to tell which command or MCP request carried it
    /// out. Kept whatever `--content` says (the link stage only compares it).
    pub arguments: Option<Value>,
}

/// The call's keys: those its provider set, completed from its messages and the request's headers.
pub(crate) fn read(call: &mut LlmCall, headers: &Headers) -> LinkKeys {
    let provided = std::mem::take(&mut call.link);
    let string = |key| {
        call.attribute(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let response_id = string(attr::RESPONSE_ID);
    let conversation_id = string(attr::CONVERSATION_ID).or_else(|| {
        SESSION_HEADERS
            .iter()
            .find_map(|name| headers.get(name))
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    });
    let input = conversation_messages(call.attribute(attr::INPUT_MESSAGES));
    let output = conversation_messages(call.attribute(attr::OUTPUT_MESSAGES));
    let tool_results: Vec<String> = parts_of(&input, "tool_call_response")
        .filter_map(|part| part.get("id")?.as_str().map(str::to_owned))
        .collect();
    let tool_calls = parts_of(&output, "tool_call")
        .filter_map(|part| {
            Some(ToolCallKey {
                id: part.get("id")?.as_str()?.to_owned(),
                name: part.get("name").and_then(Value::as_str).map(str::to_owned),
                arguments: part.get("arguments").cloned(),
            })
        })
        .collect();
    LinkKeys {
        response_id,
        previous_response_id: provided.previous_response_id,
        conversation_id: provided.conversation_id.or(conversation_id),
        traceparent: headers.get("traceparent").map(str::to_owned),
        input: input.iter().map(|m| message_hash(m)).collect(),
        output: output.iter().map(|m| message_hash(m)).collect(),
        starts_conversation: matches!(input.as_slice(), [only] if role(only) == "user")
            && tool_results.is_empty(),
        tool_calls,
        tool_results,
    }
}

/// Messages that belong to the dialogue: system and developer instructions left out.
fn conversation_messages(messages: Option<&Value>) -> Vec<&Value> {
    messages
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| !matches!(role(m), "system" | "developer"))
        .collect()
}

fn parts_of<'a>(messages: &'a [&'a Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    messages
        .iter()
        .filter_map(|m| m.get("parts")?.as_array())
        .flatten()
        .filter(move |part| part.get("type").and_then(Value::as_str) == Some(kind))
}

/// The role, with Gemini's "model" read as the assistant it is.
fn role(message: &Value) -> &str {
    match message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user")
    {
        "model" => "assistant",
        other => other,
    }
}

/// A message's hash, the same whether it came back in a response or is sent again in the next
/// request: role and parts only (no finish reason), reasoning left out (providers send it back
/// in other forms or not at all), text trimmed, JSON objects with their keys sorted.
fn message_hash(message: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    role(message).hash(&mut hasher);
    let parts = message.get("parts").and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "reasoning" => continue,
            "text" => {
                let text = part.get("content").and_then(Value::as_str);
                text.unwrap_or_default().trim().hash(&mut hasher);
            }
            _ => hash_canonical(part, &mut hasher),
        }
    }
    hasher.finish()
}

/// Hashes JSON independently of object key order; a string holding JSON hashes as that JSON
/// (tool arguments and results travel as either).
fn hash_canonical(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            b'{'.hash(hasher);
            for key in keys {
                key.hash(hasher);
                hash_canonical(&object[key], hasher);
            }
        }
        Value::Array(items) => {
            b'['.hash(hasher);
            items.len().hash(hasher);
            items.iter().for_each(|item| hash_canonical(item, hasher));
        }
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) => hash_canonical(&parsed, hasher),
            _ => text.trim().hash(hasher),
        },
        other => other.to_string().hash(hasher),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(input: Value, output: Value, headers: &[(&str, &str)]) -> LinkKeys {
        let mut call = LlmCall::new("openai", "chat");
        call.set(attr::INPUT_MESSAGES, input);
        call.set(attr::OUTPUT_MESSAGES, output);
        let headers = Headers(
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
        read(&mut call, &headers)
    }

    #[test]
    fn a_reply_hashes_like_the_same_message_sent_back() {
        let reply = json!({"role": "assistant", "finish_reason": "tool_call", "parts": [
            {"type": "reasoning", "content": "think"},
            {"type": "text", "content": "Looking up. "},
            {"type": "tool_call", "id": "c1", "name": "f", "arguments": {"b": 1, "a": "x"}}]});
        let sent_back = json!({"role": "assistant", "parts": [
            {"type": "text", "content": "Looking up."},
            {"type": "tool_call", "name": "f", "id": "c1", "arguments": "{\"a\":\"x\",\"b\":1}"}]});
        let first = keys(json!([{"role": "user", "parts": []}]), json!([reply]), &[]);
        let second = keys(json!([sent_back]), json!([]), &[]);
        assert_eq!(first.output, second.input);
        assert_eq!(first.tool_calls[0].id, "c1");
        assert_eq!(first.tool_calls[0].name.as_deref(), Some("f"));
    }

    #[test]
    fn system_prompts_are_left_out_and_a_lone_user_message_starts_a_conversation() {
        let user = json!({"role": "user", "parts": [{"type": "text", "content": "hi"}]});
        let plain = keys(json!([user.clone()]), json!([]), &[]);
        let with_system = keys(
            json!([{"role": "system", "parts": [{"type": "text", "content": "be brief"}]}, user]),
            json!([]),
            &[],
        );
        assert_eq!(plain.input, with_system.input);
        assert!(plain.starts_conversation && with_system.starts_conversation);
        let other_text = keys(
            json!([{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]),
            json!([]),
            &[],
        );
        assert_ne!(plain.input, other_text.input);
    }

    #[test]
    fn tool_results_and_session_headers() {
        let keys = keys(
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "q"}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "42"}]}
            ]),
            json!([]),
            &[("X-Session-Id", " s-1 ")],
        );
        assert_eq!(keys.tool_results, ["c1"]);
        assert!(!keys.starts_conversation);
        assert_eq!(keys.conversation_id.as_deref(), Some("s-1"));
    }
}
