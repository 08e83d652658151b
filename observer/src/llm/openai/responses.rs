//! The Responses API (`…/responses`): input and output are lists of items (messages, function
//! calls and their outputs, reasoning); streams are typed events ending in
//! `response.completed` / `.incomplete` / `.failed`, which carry the whole response.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{record_output_type, record_usage};
use crate::http::Body;
use crate::llm::error::ProviderError;
use crate::llm::exchange::{ApiReader, record_identity};
use crate::llm::json::{append_str, array_at, object_at, str_at, u64_at};
use crate::llm::otel::{
    content_parts, input_message, opaque_part, output_message, parse_arguments, reasoning_part,
    text_block_part, text_part, tool_call_part, tool_call_response_part, tool_definition,
};
use crate::llm::params::{record_model, record_numbers, record_stream};
use crate::llm::stream::{Seen, StreamSummary, read_sse};
use crate::llm::{LlmCall, attr};

pub(super) struct ResponsesApi;

const NUMERIC_PARAMS: &[(&str, &str)] = &[
    ("temperature", attr::REQUEST_TEMPERATURE),
    ("top_p", attr::REQUEST_TOP_P),
    ("max_output_tokens", attr::REQUEST_MAX_TOKENS),
];

impl ApiReader for ResponsesApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        record_stream(call, request);
        record_numbers(call, request, NUMERIC_PARAMS);
        if let Some(id) = conversation_id(request) {
            call.set(attr::CONVERSATION_ID, id);
        }
        if let Some(instructions) = str_at(request, "instructions") {
            call.set(attr::SYSTEM_INSTRUCTIONS, vec![text_part(instructions)]);
        }
        let input = match request.get("input") {
            Some(Value::String(text)) => vec![input_message("user", vec![text_part(text)])],
            Some(Value::Array(items)) => item_messages(items)
                .into_iter()
                .map(|(role, parts)| input_message(role, parts))
                .collect(),
            _ => Vec::new(),
        };
        call.set_list(attr::INPUT_MESSAGES, input);
        let tools = array_at(request, "tools").iter().map(|tool| {
            tool_definition(
                str_at(tool, "type").unwrap_or("function"),
                tool,
                "parameters",
            )
        });
        call.set_list(attr::TOOL_DEFINITIONS, tools.collect());
        record_output_type(
            call,
            request.get("text").and_then(|text| text.get("format")),
        );
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_response(call, response);
        record_output(call, array_at(response, "output"), finish_reason(response));
    }

    fn read_stream_response(&self, call: &mut LlmCall, body: &Body) -> Option<StreamSummary> {
        let mut output = OutputDraft::default();
        let mut finished: Option<String> = None;
        let summary = read_sse(body, |event, data| {
            let kind = str_at(data, "type").or(event).unwrap_or_default();
            match (kind, object_at(data, "response")) {
                ("response.created" | "response.in_progress", Some(response)) => {
                    record_response(call, response);
                    Seen::default()
                }
                (TERMINAL_COMPLETED | TERMINAL_INCOMPLETE | TERMINAL_FAILED, response) => {
                    if let Some(response) = response {
                        record_response(call, response);
                        output.replace(array_at(response, "output"));
                        finished = finish_reason(response).map(str::to_owned);
                    }
                    Seen {
                        content: false,
                        terminal: true,
                    }
                }
                ("error", _) => {
                    let error = ProviderError::from_body(data)
                        .unwrap_or_else(|| ProviderError::from_object(data));
                    error.record(call, "stream_error");
                    Seen::default()
                }
                _ => Seen {
                    content: output.absorb(kind, data),
                    terminal: false,
                },
            }
        });
        record_output(call, &output.items(), finished.as_deref());
        Some(summary)
    }
}

const TERMINAL_COMPLETED: &str = "response.completed";
const TERMINAL_INCOMPLETE: &str = "response.incomplete";
const TERMINAL_FAILED: &str = "response.failed";

/// Identity, usage, status and error of a response object (a whole body, or the one inside
/// `response.created` and the terminal stream events).
fn record_response(call: &mut LlmCall, response: &Value) {
    record_identity(call, response);
    record_usage(call, response);
    if let Some(reason) = finish_reason(response) {
        call.set(attr::RESPONSE_FINISH_REASONS, vec![reason]);
    }
    if let Some(error) = object_at(response, "error") {
        ProviderError::from_object(error).record(call, "failed");
    }
}

fn record_output(call: &mut LlmCall, items: &[Value], finish_reason: Option<&str>) {
    let messages = item_messages(items)
        .into_iter()
        .map(|(role, parts)| output_message(role, parts, finish_reason));
    call.set_list(attr::OUTPUT_MESSAGES, messages.collect());
}

/// The Responses API has no finish reason: its status stands in, as sent, refined for an
/// incomplete response by `incomplete_details.reason` (e.g. "max_output_tokens").
fn finish_reason(response: &Value) -> Option<&str> {
    match str_at(response, "status")? {
        "incomplete" => Some(
            object_at(response, "incomplete_details")
                .and_then(|details| str_at(details, "reason"))
                .unwrap_or("incomplete"),
        ),
        status @ ("completed" | "failed" | "cancelled") => Some(status),
        _ => None, // queued, in_progress: not finished yet
    }
}

/// `conversation` is an id or `{"id": ...}`.
fn conversation_id(request: &Value) -> Option<&str> {
    let conversation = request.get("conversation")?;
    conversation.as_str().or_else(|| str_at(conversation, "id"))
}

/// Items as OTel messages. A message item starts a message; calls, call outputs and reasoning
/// join the message before them when the role matches, so an assistant turn that reasons,
/// speaks and calls tools stays one message.
fn item_messages(items: &[Value]) -> Vec<(&str, Vec<Value>)> {
    let mut messages: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut after_message_item = false;
    for item in items {
        let (role, parts, is_message_item) = item_message(item);
        match messages.last_mut() {
            Some((last_role, last_parts))
                if *last_role == role && !(is_message_item && after_message_item) =>
            {
                last_parts.extend(parts);
            }
            _ => messages.push((role, parts)),
        }
        after_message_item = is_message_item;
    }
    messages
}

/// One item's role and parts, and whether it is a message item.
fn item_message(item: &Value) -> (&str, Vec<Value>, bool) {
    let call_id = str_at(item, "call_id");
    match str_at(item, "type") {
        // Input messages may omit the type: {"role": "user", "content": "..."}.
        Some("message") | None => {
            let role = str_at(item, "role").unwrap_or("user");
            (
                role,
                content_parts(item.get("content"), text_block_part),
                true,
            )
        }
        Some("function_call") => {
            let arguments = parse_arguments(str_at(item, "arguments").unwrap_or_default());
            let part = tool_call_part(call_id, str_at(item, "name"), arguments);
            ("assistant", vec![part], false)
        }
        Some("function_call_output") => {
            let output = item.get("output").cloned().unwrap_or_default();
            (
                "tool",
                vec![tool_call_response_part(call_id, output)],
                false,
            )
        }
        Some("reasoning") => ("assistant", reasoning_parts(item), false),
        Some(other) => ("assistant", vec![opaque_part(other)], false),
    }
}

/// Reasoning summaries and, where sent, the reasoning text itself.
fn reasoning_parts(item: &Value) -> Vec<Value> {
    array_at(item, "summary")
        .iter()
        .chain(array_at(item, "content"))
        .filter_map(|part| str_at(part, "text"))
        .filter(|text| !text.is_empty())
        .map(reasoning_part)
        .collect()
}

/// Output items being reassembled from stream events, by `output_index`.
#[derive(Default)]
struct OutputDraft {
    items: BTreeMap<u64, Value>,
}

impl OutputDraft {
    /// Folds in one delta or item event; true if it carried output.
    fn absorb(&mut self, kind: &str, event: &Value) -> bool {
        let Some(index) = u64_at(event, "output_index") else {
            return false;
        };
        let delta = str_at(event, "delta").unwrap_or_default();
        let part_index = |key| u64_at(event, key).unwrap_or(0);
        match kind {
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = object_at(event, "item") {
                    self.items.insert(index, item.clone());
                }
                return false;
            }
            "response.output_text.delta" => {
                let item = self.item(index, "message");
                append_to_part(
                    item,
                    "content",
                    part_index("content_index"),
                    "output_text",
                    delta,
                );
            }
            "response.reasoning_summary_text.delta" => {
                let item = self.item(index, "reasoning");
                append_to_part(
                    item,
                    "summary",
                    part_index("summary_index"),
                    "summary_text",
                    delta,
                );
            }
            "response.reasoning_text.delta" => {
                let item = self.item(index, "reasoning");
                append_to_part(
                    item,
                    "content",
                    part_index("content_index"),
                    "reasoning_text",
                    delta,
                );
            }
            "response.function_call_arguments.delta" => {
                append_str(self.item(index, "function_call"), "arguments", delta);
            }
            _ => return false,
        }
        !delta.is_empty()
    }

    /// The item at `index`, started as a `kind` item if its `output_item.added` was not seen.
    fn item(&mut self, index: u64, kind: &str) -> &mut Value {
        self.items
            .entry(index)
            .or_insert_with(|| json!({"type": kind, "role": "assistant"}))
    }

    /// The terminal event's output is the whole truth.
    fn replace(&mut self, items: &[Value]) {
        if !items.is_empty() {
            self.items = (0..).zip(items.iter().cloned()).collect();
        }
    }

    fn items(self) -> Vec<Value> {
        self.items.into_values().collect()
    }
}

/// Appends a delta to the text of part `index` of the item's `list`.
fn append_to_part(item: &mut Value, list: &str, index: u64, part_type: &str, delta: &str) {
    let Some(item) = item.as_object_mut() else {
        return;
    };
    let Some(parts) = item.entry(list).or_insert_with(|| json!([])).as_array_mut() else {
        return;
    };
    // Indices come from the stream: grow by one part at most, never to an arbitrary length.
    let index = usize::try_from(index).unwrap_or(usize::MAX);
    if index >= parts.len() {
        parts.push(json!({"type": part_type, "text": ""}));
    }
    let slot = index.min(parts.len() - 1);
    if let Some(part) = parts.get_mut(slot) {
        append_str(part, "text", delta);
    }
}
