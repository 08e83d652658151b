//! Anthropic Messages (`POST …/v1/messages`), on api.anthropic.com or any server that speaks it.
//! Content is a list of typed blocks, in requests and responses alike; streams are typed events
//! building those blocks up by index.
use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ProviderError;
use super::exchange::{ApiReader, read_call, record_identity};
use super::json::{append_str, array_at, object_at, str_at, u64_at};
use super::origin::{is_post, provider_name, request_path};
use super::otel::{
    content_parts, input_message, opaque_part, parse_arguments, reasoning_part,
    record_assistant_output, text_part, tool_call_part, tool_call_response_part, tool_definition,
};
use super::params::{record_model, record_numbers, record_stop_sequences, record_stream};
use super::stream::{Seen, StreamSummary, read_sse};
use super::usage::Usage;
use super::{LlmCall, Provider, attr};
use crate::http::{Body, Exchange, Request};

pub(crate) struct Anthropic;

/// `…/v1/messages/count_tokens` and `…/v1/messages/batches` are not calls of a model:
/// deliberately not claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Messages,
}

impl Provider for Anthropic {
    type Endpoint = Endpoint;

    fn endpoint(&self, request: &Request) -> Option<Endpoint> {
        let path = request_path(&request.target).trim_end_matches('/');
        (is_post(request) && path.ends_with("/v1/messages")).then_some(Endpoint::Messages)
    }

    fn parse(&self, endpoint: Endpoint, exchange: &Exchange) -> LlmCall {
        let provider = provider_name(&exchange.request, "anthropic");
        match endpoint {
            Endpoint::Messages => read_call(provider, "chat", exchange, &MessagesApi),
        }
    }
}

/// Also read by Bedrock, whose `invoke` of Anthropic models carries Messages bodies.
pub(crate) struct MessagesApi;

const NUMERIC_PARAMS: &[(&str, &str)] = &[
    ("max_tokens", attr::REQUEST_MAX_TOKENS),
    ("temperature", attr::REQUEST_TEMPERATURE),
    ("top_p", attr::REQUEST_TOP_P),
    ("top_k", attr::REQUEST_TOP_K),
];

impl ApiReader for MessagesApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        record_stream(call, request);
        record_numbers(call, request, NUMERIC_PARAMS);
        record_stop_sequences(call, request.get("stop_sequences"));
        call.set_list(
            attr::SYSTEM_INSTRUCTIONS,
            content_parts(request.get("system"), block_part),
        );
        let messages = array_at(request, "messages").iter().map(|message| {
            let parts = content_parts(message.get("content"), block_part);
            input_message(str_at(message, "role").unwrap_or("user"), parts)
        });
        call.set_list(attr::INPUT_MESSAGES, messages.collect());
        let tools = array_at(request, "tools").iter().map(|tool| {
            tool_definition(
                str_at(tool, "type").unwrap_or("function"),
                tool,
                "input_schema",
            )
        });
        call.set_list(attr::TOOL_DEFINITIONS, tools.collect());
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        if let Some(report) = object_at(response, "usage") {
            usage(report).record(call);
        }
        record_output(
            call,
            array_at(response, "content"),
            str_at(response, "stop_reason"),
        );
    }

    fn read_stream_response(&self, call: &mut LlmCall, body: &Body) -> Option<StreamSummary> {
        let mut message = MessageDraft::default();
        let summary = read_sse(body, |event, data| message.absorb(call, event, data));
        message.finish(call);
        Some(summary)
    }
}

/// Anthropic's `input_tokens` leaves out cached tokens.
fn usage(report: &Value) -> Usage {
    Usage::with_cache_apart(
        u64_at(report, "input_tokens"),
        u64_at(report, "output_tokens"),
        u64_at(report, "cache_read_input_tokens"),
        u64_at(report, "cache_creation_input_tokens"),
    )
}

fn record_output(call: &mut LlmCall, blocks: &[Value], stop_reason: Option<&str>) {
    record_assistant_output(call, blocks, stop_reason, block_part);
}

/// A content block (request, response or reassembled from a stream) as an OTel part.
fn block_part(block: &Value) -> Value {
    let kind = str_at(block, "type").unwrap_or("unknown");
    let field = |key| str_at(block, key);
    match kind {
        "text" => text_part(field("text").unwrap_or_default()),
        "thinking" => reasoning_part(field("thinking").unwrap_or_default()),
        "tool_use" => {
            let input = block.get("input").cloned().unwrap_or_default();
            tool_call_part(field("id"), field("name"), input)
        }
        "tool_result" => {
            let content = block.get("content").cloned().unwrap_or_default();
            tool_call_response_part(field("tool_use_id"), content)
        }
        _ => opaque_part(kind),
    }
}

/// The response message being reassembled from stream events (SSE here, event-stream chunks
/// on Bedrock).
#[derive(Default)]
pub(crate) struct MessageDraft {
    blocks: BTreeMap<u64, Value>,
    /// `input_json_delta` fragments per tool_use block, parsed once the stream is read.
    tool_inputs: BTreeMap<u64, String>,
    stop_reason: Option<String>,
    usage: Usage,
}

impl MessageDraft {
    /// Folds in one stream event, typed by its `type` field or else by `event_type`; identity
    /// and errors go straight to the call.
    pub fn absorb(&mut self, call: &mut LlmCall, event_type: Option<&str>, event: &Value) -> Seen {
        match str_at(event, "type").or(event_type).unwrap_or_default() {
            "message_start" => {
                if let Some(start) = object_at(event, "message") {
                    record_identity(call, start);
                    self.absorb_usage(start);
                }
            }
            "content_block_start" => self.start_block(event),
            "content_block_delta" => return Seen::output(self.absorb_block_delta(event)),
            "message_delta" => self.absorb_message_delta(event),
            "message_stop" => return Seen::TERMINAL,
            "error" => {
                let error = ProviderError::from_body(event).unwrap_or_default();
                error.record(call, "stream_error");
            }
            _ => {} // ping, content_block_stop
        }
        Seen::NOTHING
    }

    /// `message_start` carries input usage; `message_delta` the cumulative output count.
    fn absorb_usage(&mut self, carrier: &Value) {
        if let Some(report) = object_at(carrier, "usage") {
            self.usage.update(usage(report));
        }
    }

    fn absorb_message_delta(&mut self, event: &Value) {
        let delta = event.get("delta");
        if let Some(reason) = delta.and_then(|d| str_at(d, "stop_reason")) {
            self.stop_reason = Some(reason.to_owned());
        }
        self.absorb_usage(event);
    }

    fn start_block(&mut self, event: &Value) {
        if let Some(block) = object_at(event, "content_block") {
            self.blocks
                .insert(u64_at(event, "index").unwrap_or(0), block.clone());
        }
    }

    /// Folds a `content_block_delta` into its block; true if it carried output.
    fn absorb_block_delta(&mut self, event: &Value) -> bool {
        let index = u64_at(event, "index").unwrap_or(0);
        let Some(delta) = object_at(event, "delta") else {
            return false;
        };
        let (target, fragment) = match str_at(delta, "type") {
            Some("text_delta") => ("text", str_at(delta, "text")),
            Some("thinking_delta") => ("thinking", str_at(delta, "thinking")),
            Some("input_json_delta") => {
                let fragment = str_at(delta, "partial_json").unwrap_or_default();
                self.tool_inputs
                    .entry(index)
                    .or_default()
                    .push_str(fragment);
                return !fragment.is_empty();
            }
            _ => return false, // signature_delta and future kinds
        };
        let fragment = fragment.unwrap_or_default();
        // A block whose start was not seen: its kind is the field its deltas fill.
        let block = self
            .blocks
            .entry(index)
            .or_insert_with(|| serde_json::json!({ "type": target }));
        append_str(block, target, fragment);
        !fragment.is_empty()
    }

    /// Records what the stream said once it is read.
    pub fn finish(mut self, call: &mut LlmCall) {
        self.usage.record(call);
        let stop_reason = self.stop_reason.take();
        record_output(call, &self.into_blocks(), stop_reason.as_deref());
    }

    fn into_blocks(mut self) -> Vec<Value> {
        for (index, input) in self.tool_inputs {
            if let Some(block) = self.blocks.get_mut(&index).and_then(Value::as_object_mut) {
                block.insert("input".into(), parse_arguments(&input));
            }
        }
        self.blocks.into_values().collect()
    }
}
