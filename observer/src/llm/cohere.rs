//! Cohere v2: `POST /v2/chat` (JSON, or SSE events `message-start`, `content-delta`,
//! `tool-plan-delta`, `tool-call-start/delta/end`, `message-end`) and `/v2/embed`. Messages
//! copy Chat Completions' shape, plus a `tool_plan` (the model's reasoning before tool calls).
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::error::ProviderError;
use super::exchange::{ApiReader, read_call, record_identity};
use super::json::{append_str, array_at, object_at, str_at, u64_at};
use super::openai::{message_parts, record_chat_messages, record_output_type};
use super::origin::{is_post, known_host_or_names_model, provider_name, request_path};
use super::otel::{output_message, reasoning_part};
use super::params::{record_model, record_numbers, record_stop_sequences, record_stream};
use super::stream::{Seen, StreamSummary, read_sse};
use super::usage::Usage;
use super::{LlmCall, Provider, attr};
use crate::http::{Body, Exchange, Request};

pub(crate) struct Cohere;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Embed,
}

impl Provider for Cohere {
    type Endpoint = Endpoint;

    fn endpoint(&self, request: &Request) -> Option<Endpoint> {
        if !is_post(request) {
            return None;
        }
        let path = request_path(&request.target).trim_end_matches('/');
        let endpoint = if path.ends_with("/v2/chat") {
            Endpoint::Chat
        } else if path.ends_with("/v2/embed") {
            Endpoint::Embed
        } else {
            return None;
        };
        known_host_or_names_model(request).then_some(endpoint)
    }

    fn parse(&self, endpoint: Endpoint, exchange: &Exchange) -> LlmCall {
        let provider = provider_name(&exchange.request, "cohere");
        match endpoint {
            Endpoint::Chat => read_call(provider, "chat", exchange, &ChatApi),
            Endpoint::Embed => read_call(provider, "embeddings", exchange, &EmbedApi),
        }
    }
}

struct ChatApi;

const NUMERIC_PARAMS: &[(&str, &str)] = &[
    ("temperature", attr::REQUEST_TEMPERATURE),
    ("p", attr::REQUEST_TOP_P),
    ("k", attr::REQUEST_TOP_K),
    ("max_tokens", attr::REQUEST_MAX_TOKENS),
    ("seed", attr::REQUEST_SEED),
    ("frequency_penalty", attr::REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", attr::REQUEST_PRESENCE_PENALTY),
];

impl ApiReader for ChatApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        record_stream(call, request);
        record_numbers(call, request, NUMERIC_PARAMS);
        record_stop_sequences(call, request.get("stop_sequences"));
        record_chat_messages(call, request, parts);
        record_output_type(call, request.get("response_format"));
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        if let Some(report) = object_at(response, "usage") {
            usage(report).record(call);
        }
        record_output(
            call,
            response.get("message"),
            str_at(response, "finish_reason"),
        );
    }

    fn read_stream_response(&self, call: &mut LlmCall, body: &Body) -> Option<StreamSummary> {
        let mut draft = MessageDraft::default();
        let summary = read_sse(body, |event, data| {
            let kind = str_at(data, "type").or(event).unwrap_or_default();
            draft.absorb(call, kind, data)
        });
        draft.usage.record(call);
        let message = draft.into_message();
        let reason = str_at(&message, "finish_reason").map(str::to_owned);
        record_output(call, Some(&message), reason.as_deref());
        Some(summary)
    }
}

/// A message's parts: its tool plan as reasoning, then the Chat-Completions-shaped rest.
fn parts(message: &Value) -> Vec<Value> {
    let plan = str_at(message, "tool_plan").filter(|plan| !plan.is_empty());
    plan.map(reasoning_part)
        .into_iter()
        .chain(message_parts(message))
        .collect()
}

/// Actual token counts (`tokens`) when given, else the billed ones.
fn usage(report: &Value) -> Usage {
    let count = |field| {
        ["tokens", "billed_units"]
            .iter()
            .find_map(|group| object_at(report, group).and_then(|g| u64_at(g, field)))
    };
    Usage {
        input: count("input_tokens"),
        output: count("output_tokens"),
        ..Usage::default()
    }
}

fn record_output(call: &mut LlmCall, message: Option<&Value>, finish_reason: Option<&str>) {
    if let Some(reason) = finish_reason {
        call.set(attr::RESPONSE_FINISH_REASONS, vec![reason]);
    }
    let Some(message) = message.filter(|m| m.is_object()) else {
        return;
    };
    let output = output_message("assistant", parts(message), finish_reason);
    call.set(attr::OUTPUT_MESSAGES, vec![output]);
}

/// The response message being reassembled from stream events, in the JSON response's shape.
#[derive(Default)]
struct MessageDraft {
    content: BTreeMap<u64, Value>,
    tool_calls: BTreeMap<u64, Value>,
    tool_plan: String,
    finish_reason: Option<String>,
    usage: Usage,
}

impl MessageDraft {
    fn absorb(&mut self, call: &mut LlmCall, kind: &str, event: &Value) -> Seen {
        let index = u64_at(event, "index").unwrap_or(0);
        let delta = event.get("delta").unwrap_or(&Value::Null);
        let message = delta.get("message").unwrap_or(&Value::Null);
        match kind {
            "message-start" => {
                record_identity(call, event);
            }
            "content-start" => {
                if let Some(content) = object_at(message, "content") {
                    self.content.insert(index, content.clone());
                }
            }
            "content-delta" => {
                let content = message.get("content").unwrap_or(&Value::Null);
                let mut output = false;
                for field in ["text", "thinking"] {
                    if let Some(fragment) = str_at(content, field) {
                        let block = self
                            .content
                            .entry(index)
                            .or_insert_with(|| json!({"type": field}));
                        append_str(block, field, fragment);
                        output |= !fragment.is_empty();
                    }
                }
                return Seen::output(output);
            }
            "tool-plan-delta" => {
                let fragment = str_at(message, "tool_plan").unwrap_or_default();
                self.tool_plan.push_str(fragment);
                return Seen::output(!fragment.is_empty());
            }
            "tool-call-start" => {
                if let Some(tool_call) = object_at(message, "tool_calls") {
                    self.tool_calls.insert(index, tool_call.clone());
                }
                return Seen::output(true);
            }
            "tool-call-delta" => {
                let function = message.get("tool_calls").and_then(|t| t.get("function"));
                let fragment = function
                    .and_then(|f| str_at(f, "arguments"))
                    .unwrap_or_default();
                if let Some(function) = self
                    .tool_calls
                    .get_mut(&index)
                    .and_then(|call| call.get_mut("function"))
                {
                    append_str(function, "arguments", fragment);
                }
                return Seen::output(!fragment.is_empty());
            }
            "message-end" => {
                self.finish_reason = str_at(delta, "finish_reason").map(str::to_owned);
                if let Some(report) = object_at(delta, "usage") {
                    self.usage.update(usage(report));
                }
                if let Some(error) = delta.get("error").and_then(Value::as_str) {
                    ProviderError::with_message(error).record(call, "stream_error");
                }
                return Seen::TERMINAL;
            }
            _ => {} // content-end, tool-call-end, citation-*
        }
        Seen::NOTHING
    }

    /// The message in the JSON response's shape (with the finish reason beside it), so both
    /// are read by the same code.
    fn into_message(self) -> Value {
        // Cohere's thinking blocks are reasoning; the shared message reader expects it beside the content.
        let (thinking, content): (Vec<Value>, Vec<Value>) = self
            .content
            .into_values()
            .partition(|block| str_at(block, "type") == Some("thinking"));
        let thinking: String = thinking
            .iter()
            .filter_map(|block| str_at(block, "thinking"))
            .collect();
        json!({
            "role": "assistant",
            "content": content,
            "thinking": thinking,
            "tool_plan": self.tool_plan,
            "tool_calls": self.tool_calls.into_values().collect::<Vec<_>>(),
            "finish_reason": self.finish_reason,
        })
    }
}

/// `{model, texts, input_type, output_dimension}` → `{id, embeddings, meta.billed_units}`.
struct EmbedApi;

impl ApiReader for EmbedApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        record_numbers(
            call,
            request,
            &[("output_dimension", attr::EMBEDDINGS_DIMENSION_COUNT)],
        );
        let formats: Vec<Value> = array_at(request, "embedding_types").to_vec();
        call.set_list(attr::REQUEST_ENCODING_FORMATS, formats);
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        if let Some(meta) = object_at(response, "meta") {
            usage(meta).record(call);
        }
    }
}
