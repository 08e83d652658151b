//! AWS Bedrock runtime (`bedrock-runtime.{region}.amazonaws.com`, or any host with its paths):
//! `POST /model/{modelId}/converse` and `/converse-stream` (Bedrock's own message API), and
//! `/invoke` and `/invoke-with-response-stream` (the model family's native body). Streams are
//! AWS event streams. The model id, percent-encoded in the path, is the request model.
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::anthropic::{MessageDraft, MessagesApi};
use super::error::ProviderError;
use super::exchange::{ApiReader, read_into};
use super::framing::eventstream;
use super::json::{self, array_at, object_at, str_at, u64_at};
use super::origin::{decode_segment, is_post, request_path};
use super::otel::{
    input_message, opaque_part, parse_arguments, reasoning_part, record_assistant_output,
    text_part, tool_call_part, tool_call_response_part, tool_definition,
};
use super::params::{record_numbers, record_stop_sequences};
use super::stream::{Seen, StreamSummary, read_eventstream};
use super::usage::Usage;
use super::{LlmCall, Provider, attr};
use crate::http::{Body, Exchange, Request, Response};

pub(crate) struct Bedrock;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    model: String,
    action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Converse { stream: bool },
    Invoke { stream: bool },
}

impl Provider for Bedrock {
    type Endpoint = Endpoint;

    fn endpoint(&self, request: &Request) -> Option<Endpoint> {
        if !is_post(request) {
            return None;
        }
        let path = request_path(&request.target);
        let (_, rest) = path.split_once("/model/")?;
        let (model, action) = rest.rsplit_once('/')?;
        let action = match action {
            "converse" => Action::Converse { stream: false },
            "converse-stream" => Action::Converse { stream: true },
            "invoke" => Action::Invoke { stream: false },
            "invoke-with-response-stream" => Action::Invoke { stream: true },
            _ => return None,
        };
        (!model.is_empty()).then(|| Endpoint {
            model: decode_segment(model),
            action,
        })
    }

    fn parse(&self, endpoint: Endpoint, exchange: &Exchange) -> LlmCall {
        let (operation, api): (&str, &dyn ApiReader) = match endpoint.action {
            Action::Converse { stream } => {
                ("chat", if stream { &CONVERSE_STREAM } else { &CONVERSE })
            }
            Action::Invoke { stream } if is_anthropic(&endpoint.model) => (
                "chat",
                if stream {
                    &ANTHROPIC_STREAM
                } else {
                    &ANTHROPIC
                },
            ),
            Action::Invoke { stream } => (
                native_operation(&endpoint.model, &exchange.request),
                if stream { &NATIVE_STREAM } else { &NATIVE },
            ),
        };
        let mut call = LlmCall::new("aws.bedrock", operation);
        call.set_request_model(&endpoint.model);
        read_into(call, exchange, api)
    }
}

/// Anthropic models, by id (`anthropic.claude-…`), cross-region profile (`us.anthropic.…`) or ARN.
fn is_anthropic(model: &str) -> bool {
    model.contains("anthropic.")
}

/// Other families' native bodies: embedding models embed; a body with `messages` chats;
/// the rest (`prompt`, `inputText`) complete text.
fn native_operation(model: &str, request: &Request) -> &'static str {
    if model.contains("embed") {
        return "embeddings";
    }
    let body = json::parse(&request.body.data).unwrap_or_default();
    if body.get("messages").is_some() {
        "chat"
    } else {
        "text_completion"
    }
}

/// An API read in its whole or streamed form.
struct Streaming<A> {
    api: A,
    stream: bool,
}

const CONVERSE: Streaming<ConverseApi> = Streaming {
    api: ConverseApi,
    stream: false,
};
const CONVERSE_STREAM: Streaming<ConverseApi> = Streaming {
    api: ConverseApi,
    stream: true,
};
const ANTHROPIC: Streaming<InvokeAnthropic> = Streaming {
    api: InvokeAnthropic,
    stream: false,
};
const ANTHROPIC_STREAM: Streaming<InvokeAnthropic> = Streaming {
    api: InvokeAnthropic,
    stream: true,
};
const NATIVE: Streaming<InvokeNative> = Streaming {
    api: InvokeNative,
    stream: false,
};
const NATIVE_STREAM: Streaming<InvokeNative> = Streaming {
    api: InvokeNative,
    stream: true,
};

/// What a Bedrock API reads; the event-stream plumbing around it is shared.
trait BedrockApi: Sync {
    fn read_request(&self, call: &mut LlmCall, request: &Value);
    fn read_json_response(&self, call: &mut LlmCall, response: &Value);
    fn read_events(&self, call: &mut LlmCall, body: &Body) -> StreamSummary;
}

impl<A: BedrockApi> ApiReader for Streaming<A> {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        self.api.read_request(call, request);
        // The path says whether it streams, whatever a native body says.
        call.set(attr::REQUEST_STREAM, self.stream);
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        self.api.read_json_response(call, response);
    }

    fn is_stream(&self, _response: &Response) -> bool {
        self.stream
    }

    fn read_stream_response(&self, call: &mut LlmCall, body: &Body) -> Option<StreamSummary> {
        Some(self.api.read_events(call, body))
    }
}

/// An event-stream message as (event type, JSON payload); exceptions are recorded on the call.
fn event<'m>(call: &mut LlmCall, message: &'m eventstream::Message) -> Option<(&'m str, Value)> {
    let payload = json::parse(message.payload).unwrap_or_default();
    if message.header_str(":message-type") == Some("exception") {
        let kind = message.header_str(":exception-type").unwrap_or("exception");
        let error = ProviderError::from_error_body(&payload).unwrap_or_default();
        error.with_kind(kind).record(call, kind);
        return None;
    }
    Some((message.header_str(":event-type")?, payload))
}

/// Converse: `{messages, system, inferenceConfig, toolConfig}` → `{output.message, stopReason, usage}`.
struct ConverseApi;

const INFERENCE_PARAMS: &[(&str, &str)] = &[
    ("maxTokens", attr::REQUEST_MAX_TOKENS),
    ("temperature", attr::REQUEST_TEMPERATURE),
    ("topP", attr::REQUEST_TOP_P),
];

impl BedrockApi for ConverseApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        if let Some(config) = object_at(request, "inferenceConfig") {
            record_numbers(call, config, INFERENCE_PARAMS);
            record_stop_sequences(call, config.get("stopSequences"));
        }
        let system = array_at(request, "system").iter().map(block_part);
        call.set_list(attr::SYSTEM_INSTRUCTIONS, system.collect());
        let messages = array_at(request, "messages").iter().map(|message| {
            let parts = array_at(message, "content")
                .iter()
                .map(block_part)
                .collect();
            input_message(str_at(message, "role").unwrap_or("user"), parts)
        });
        call.set_list(attr::INPUT_MESSAGES, messages.collect());
        let tools = request
            .get("toolConfig")
            .map_or(&[][..], |config| array_at(config, "tools"))
            .iter()
            .filter_map(|tool| object_at(tool, "toolSpec"))
            .map(|spec| {
                let mut definition = tool_definition("function", spec, "inputSchema");
                // The schema itself sits one level down: `inputSchema: {json: {...}}`.
                if let Some(schema) = spec.get("inputSchema").and_then(|s| s.get("json")) {
                    definition["parameters"] = schema.clone();
                }
                definition
            });
        call.set_list(attr::TOOL_DEFINITIONS, tools.collect());
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        if let Some(report) = object_at(response, "usage") {
            converse_usage(report).record(call);
        }
        let message = response.get("output").and_then(|o| object_at(o, "message"));
        let blocks = message.map_or(&[][..], |m| array_at(m, "content"));
        record_output(call, blocks, str_at(response, "stopReason"));
    }

    fn read_events(&self, call: &mut LlmCall, body: &Body) -> StreamSummary {
        let mut draft = ConverseDraft::default();
        let summary = read_eventstream(body, |message| match event(call, message) {
            Some((kind, payload)) => draft.absorb(kind, &payload),
            None => Seen::NOTHING,
        });
        draft.usage.record(call);
        let blocks = draft
            .blocks
            .into_values()
            .map(BlockDraft::into_block)
            .collect::<Vec<_>>();
        record_output(call, &blocks, draft.stop_reason.as_deref());
        summary
    }
}

/// Converse's `inputTokens` leaves out cache reads and writes.
fn converse_usage(report: &Value) -> Usage {
    Usage::with_cache_apart(
        u64_at(report, "inputTokens"),
        u64_at(report, "outputTokens"),
        u64_at(report, "cacheReadInputTokens"),
        u64_at(report, "cacheWriteInputTokens"),
    )
}

fn record_output(call: &mut LlmCall, blocks: &[Value], stop_reason: Option<&str>) {
    record_assistant_output(call, blocks, stop_reason, block_part);
}

/// A Converse content block (`{text}`, `{toolUse}`, `{toolResult}`, `{reasoningContent}`, ...).
fn block_part(block: &Value) -> Value {
    if let Some(text) = str_at(block, "text") {
        return text_part(text);
    }
    if let Some(tool_use) = object_at(block, "toolUse") {
        let input = tool_use.get("input").cloned().unwrap_or_default();
        return tool_call_part(
            str_at(tool_use, "toolUseId"),
            str_at(tool_use, "name"),
            input,
        );
    }
    if let Some(result) = object_at(block, "toolResult") {
        let content = result.get("content").cloned().unwrap_or_default();
        return tool_call_response_part(str_at(result, "toolUseId"), content);
    }
    let reasoning = block
        .get("reasoningContent")
        .and_then(|r| r.get("reasoningText"))
        .and_then(|r| str_at(r, "text"));
    if let Some(text) = reasoning {
        return reasoning_part(text);
    }
    let kind = block.as_object().and_then(|fields| fields.keys().next());
    opaque_part(kind.map_or("unknown", String::as_str))
}

/// The response being reassembled from `converse-stream` events.
#[derive(Default)]
struct ConverseDraft {
    blocks: BTreeMap<u64, BlockDraft>,
    stop_reason: Option<String>,
    usage: Usage,
}

#[derive(Debug)]
enum BlockDraft {
    Text(String),
    Reasoning(String),
    ToolUse {
        id: Option<String>,
        name: Option<String>,
        input: String,
    },
}

impl ConverseDraft {
    fn absorb(&mut self, kind: &str, event: &Value) -> Seen {
        let index = u64_at(event, "contentBlockIndex").unwrap_or(0);
        match kind {
            "contentBlockStart" => {
                let tool_use = event.get("start").and_then(|s| object_at(s, "toolUse"));
                if let Some(tool_use) = tool_use {
                    let field = |key| str_at(tool_use, key).map(str::to_owned);
                    let block = BlockDraft::ToolUse {
                        id: field("toolUseId"),
                        name: field("name"),
                        input: String::new(),
                    };
                    self.blocks.insert(index, block);
                }
            }
            "contentBlockDelta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                return Seen::output(self.absorb_delta(index, delta));
            }
            "messageStop" => {
                self.stop_reason = str_at(event, "stopReason").map(str::to_owned);
            }
            // Usage and metrics come last.
            "metadata" => {
                if let Some(report) = object_at(event, "usage") {
                    self.usage.update(converse_usage(report));
                }
                return Seen::TERMINAL;
            }
            _ => {} // messageStart, contentBlockStop
        }
        Seen::NOTHING
    }

    /// Appends a delta's fragment to its block; true if it carried output.
    fn absorb_delta(&mut self, index: u64, delta: &Value) -> bool {
        let reasoning = delta
            .get("reasoningContent")
            .and_then(|r| str_at(r, "text"));
        let tool_input = delta.get("toolUse").and_then(|t| str_at(t, "input"));
        let (fragment, fresh): (&str, fn() -> BlockDraft) =
            match (str_at(delta, "text"), reasoning, tool_input) {
                (Some(text), _, _) => (text, || BlockDraft::Text(String::new())),
                (_, Some(text), _) => (text, || BlockDraft::Reasoning(String::new())),
                (_, _, Some(input)) => (input, || BlockDraft::ToolUse {
                    id: None,
                    name: None,
                    input: String::new(),
                }),
                _ => return false, // reasoning signatures and future kinds
            };
        let (BlockDraft::Text(target)
        | BlockDraft::Reasoning(target)
        | BlockDraft::ToolUse { input: target, .. }) =
            self.blocks.entry(index).or_insert_with(fresh);
        target.push_str(fragment);
        !fragment.is_empty()
    }
}

impl BlockDraft {
    /// The block in the shape of a whole response's, so both are read by the same code.
    fn into_block(self) -> Value {
        match self {
            BlockDraft::Text(text) => json!({ "text": text }),
            BlockDraft::Reasoning(text) => {
                json!({"reasoningContent": {"reasoningText": {"text": text}}})
            }
            BlockDraft::ToolUse { id, name, input } => json!({"toolUse": {
                "toolUseId": id, "name": name, "input": parse_arguments(&input),
            }}),
        }
    }
}

/// The decoded native body of an `invoke-with-response-stream` `chunk` event:
/// `{"bytes": base64 of the family's own stream event}`.
fn chunk_body(kind: &str, payload: &Value) -> Option<Value> {
    if kind != "chunk" {
        return None;
    }
    let bytes = BASE64.decode(str_at(payload, "bytes")?).ok()?;
    json::parse(&bytes)
}

/// Bedrock appends its own count to every family's last chunk.
fn invocation_metrics(chunk: &Value) -> Option<&Value> {
    object_at(chunk, "amazon-bedrock-invocationMetrics")
}

fn record_invocation_usage(call: &mut LlmCall, metrics: &Value) {
    Usage {
        input: u64_at(metrics, "inputTokenCount"),
        output: u64_at(metrics, "outputTokenCount"),
        ..Usage::default()
    }
    .record(call);
}

/// `invoke` of an Anthropic model: Messages bodies (the model in the URL, not the body), and
/// Messages stream events inside the chunks, read by the Anthropic provider's own code.
struct InvokeAnthropic;

impl BedrockApi for InvokeAnthropic {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        MessagesApi.read_request(call, request);
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        MessagesApi.read_json_response(call, response);
    }

    fn read_events(&self, call: &mut LlmCall, body: &Body) -> StreamSummary {
        let mut draft = MessageDraft::default();
        let summary = read_eventstream(body, |message| {
            let chunk = event(call, message).and_then(|(kind, payload)| chunk_body(kind, &payload));
            match chunk {
                Some(chunk) => draft.absorb(call, None, &chunk),
                None => Seen::NOTHING,
            }
        });
        draft.finish(call);
        summary
    }
}

/// `invoke` of any other family: model, operation, status, and Bedrock's own token count.
struct InvokeNative;

impl BedrockApi for InvokeNative {
    fn read_request(&self, _call: &mut LlmCall, _request: &Value) {}

    fn read_json_response(&self, _call: &mut LlmCall, _response: &Value) {}

    fn read_events(&self, call: &mut LlmCall, body: &Body) -> StreamSummary {
        read_eventstream(body, |message| {
            let chunk = event(call, message).and_then(|(kind, payload)| chunk_body(kind, &payload));
            match chunk.as_ref().and_then(invocation_metrics) {
                Some(metrics) => {
                    record_invocation_usage(call, metrics);
                    Seen::TERMINAL
                }
                None => Seen::output(chunk.is_some()),
            }
        })
    }
}
