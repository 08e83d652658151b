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
        call.link.previous_response_id = str_at(request, "previous_response_id").map(str::to_owned);
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
        let summary = read_sse(body, |event, data| {
            let kind = str_at(data, "type").or(event).unwrap_or_default();
            output.absorb(call, kind, data)
        });
        let finish_reason = output.finish_reason.take();
        record_output(call, &output.items(), finish_reason.as_deref());
        Some(summary)
    }
}

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

/// The output being reassembled from stream events.
#[derive(Default)]
struct OutputDraft {
    /// Output items by `output_index`.
    items: BTreeMap<u64, Value>,
    finish_reason: Option<String>,
}

impl OutputDraft {
    /// Folds in one stream event; response-level facts and errors go straight to the call.
    fn absorb(&mut self, call: &mut LlmCall, kind: &str, event: &Value) -> Seen {
        let response = object_at(event, "response");
        match (kind, response) {
            ("response.created" | "response.in_progress", Some(response)) => {
                record_response(call, response);
            }
            ("response.completed" | "response.incomplete" | "response.failed", _) => {
                if let Some(response) = response {
                    record_response(call, response);
                    self.replace(array_at(response, "output"));
                    self.finish_reason = finish_reason(response).map(str::to_owned);
                }
                return Seen::TERMINAL;
            }
            ("error", _) => {
                let error = ProviderError::from_body(event)
                    .unwrap_or_else(|| ProviderError::from_object(event));
                error.record(call, "stream_error");
            }
            _ => return Seen::output(self.absorb_output(kind, event)),
        }
        Seen::NOTHING
    }

    /// Folds in one output item or delta event; true if it carried output.
    fn absorb_output(&mut self, kind: &str, event: &Value) -> bool {
        let Some(index) = u64_at(event, "output_index") else {
            return false;
        };
        let delta = str_at(event, "delta").unwrap_or_default();
        match kind {
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = object_at(event, "item") {
                    self.items.insert(index, item.clone());
                }
                return false;
            }
            "response.function_call_arguments.delta" => {
                append_str(self.item(index, "function_call"), "arguments", delta);
            }
            _ => {
                let Some(target) = TEXT_DELTAS.iter().find(|target| target.event == kind) else {
                    return false;
                };
                let part = u64_at(event, target.index_field).unwrap_or(0);
                target.append(self.item(index, target.item_type), part, delta);
            }
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

/// A delta event that extends the text of one part of an item.
struct TextDelta {
    event: &'static str,
    /// The item type to start when the item's `output_item.added` was not seen.
    item_type: &'static str,
    /// The item's list of parts, and the event field indexing it.
    list: &'static str,
    index_field: &'static str,
    part_type: &'static str,
}

const TEXT_DELTAS: &[TextDelta] = &[
    TextDelta {
        event: "response.output_text.delta",
        item_type: "message",
        list: "content",
        index_field: "content_index",
        part_type: "output_text",
    },
    TextDelta {
        event: "response.reasoning_summary_text.delta",
        item_type: "reasoning",
        list: "summary",
        index_field: "summary_index",
        part_type: "summary_text",
    },
    TextDelta {
        event: "response.reasoning_text.delta",
        item_type: "reasoning",
        list: "content",
        index_field: "content_index",
        part_type: "reasoning_text",
    },
];

impl TextDelta {
    fn append(&self, item: &mut Value, index: u64, delta: &str) {
        let Some(item) = item.as_object_mut() else {
            return;
        };
        let list = item.entry(self.list).or_insert_with(|| json!([]));
        let Some(parts) = list.as_array_mut() else {
            return;
        };
        // Indices come from the stream: grow by one part at most, never to an arbitrary length.
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        if index >= parts.len() {
            parts.push(json!({"type": self.part_type, "text": ""}));
        }
        let slot = index.min(parts.len() - 1);
        if let Some(part) = parts.get_mut(slot) {
            append_str(part, "text", delta);
        }
    }
}
