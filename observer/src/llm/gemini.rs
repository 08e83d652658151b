//! Google Gemini (`generativelanguage.googleapis.com`) and Vertex AI (`*aiplatform.googleapis.com`):
//! `POST …/models/{model}:generateContent`, `:streamGenerateContent` (SSE with `?alt=sse`, else a
//! streamed JSON array), `:embedContent` and `:batchEmbedContents`. The model is named only in
//! the URL. Generation is operation "chat", as the GenAI conventions ask for Gemini chat.
//! An API key in `?key=` was redacted by the HTTP stage; the target is never copied here.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::error::ProviderError;
use super::exchange::{ApiReader, is_event_stream, read_into};
use super::json::{array_at, object_at, str_at, u64_at};
use super::origin::{is_post, provider_name, request_path};
use super::otel::{
    input_message, opaque_part, output_message, reasoning_part, text_part, tool_call_part,
    tool_call_response_part, tool_definition,
};
use super::params::{record_numbers, record_stop_sequences};
use super::stream::{Seen, StreamSummary, read_json_array, read_sse};
use super::usage::Usage;
use super::{LlmCall, Provider, attr};
use crate::http::{Body, Exchange, Request, Response};

pub(crate) struct Gemini;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    model: String,
    method: Method,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Generate { stream: bool },
    Embed,
}

impl Provider for Gemini {
    type Endpoint = Endpoint;

    fn endpoint(&self, request: &Request) -> Option<Endpoint> {
        if !is_post(request) {
            return None;
        }
        let path = request_path(&request.target);
        let (_, model_and_method) = path.rsplit_once("/models/")?;
        let (model, method) = model_and_method.split_once(':')?;
        let method = match method {
            "generateContent" => Method::Generate { stream: false },
            "streamGenerateContent" => Method::Generate { stream: true },
            "embedContent" | "batchEmbedContents" => Method::Embed,
            _ => return None, // countTokens and the like call no model
        };
        (!model.is_empty() && !model.contains('/')).then(|| Endpoint {
            model: model.to_owned(),
            method,
        })
    }

    fn parse(&self, endpoint: Endpoint, exchange: &Exchange) -> LlmCall {
        let provider = provider_name(&exchange.request, "gcp.gemini");
        let (operation, api): (_, &dyn ApiReader) = match endpoint.method {
            Method::Generate { stream: false } => ("chat", &GenerateApi { stream: false }),
            Method::Generate { stream: true } => ("chat", &GenerateApi { stream: true }),
            Method::Embed => ("embeddings", &EmbedApi),
        };
        let mut call = LlmCall::new(provider, operation);
        call.set_request_model(&endpoint.model);
        read_into(call, exchange, api)
    }
}

struct GenerateApi {
    stream: bool,
}

const GENERATION_PARAMS: &[(&str, &str)] = &[
    ("temperature", attr::REQUEST_TEMPERATURE),
    ("topP", attr::REQUEST_TOP_P),
    ("topK", attr::REQUEST_TOP_K),
    ("maxOutputTokens", attr::REQUEST_MAX_TOKENS),
    ("seed", attr::REQUEST_SEED),
    ("presencePenalty", attr::REQUEST_PRESENCE_PENALTY),
    ("frequencyPenalty", attr::REQUEST_FREQUENCY_PENALTY),
];

impl ApiReader for GenerateApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        call.set(attr::REQUEST_STREAM, self.stream);
        if let Some(config) = object_at(request, "generationConfig") {
            record_generation_config(call, config);
        }
        if let Some(system) = object_at(request, "systemInstruction") {
            call.set_list(attr::SYSTEM_INSTRUCTIONS, content_parts(system));
        }
        let messages = array_at(request, "contents").iter().map(|content| {
            input_message(
                role(str_at(content, "role").unwrap_or("user")),
                content_parts(content),
            )
        });
        call.set_list(attr::INPUT_MESSAGES, messages.collect());
        let tools = array_at(request, "tools").iter().flat_map(tool_definitions);
        call.set_list(attr::TOOL_DEFINITIONS, tools.collect());
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        if let Some(report) = object_at(response, "usageMetadata") {
            usage(report).record(call);
        }
        record_candidates(call, array_at(response, "candidates"));
    }

    fn is_stream(&self, response: &Response) -> bool {
        self.stream || is_event_stream(response)
    }

    fn read_stream_response(&self, call: &mut LlmCall, body: &Body) -> Option<StreamSummary> {
        let mut draft = ResponseDraft::default();
        let summary = if body.data.trim_ascii_start().starts_with(b"[") {
            read_json_array(body, |chunk| draft.absorb(call, chunk))
        } else {
            read_sse(body, |_, chunk| draft.absorb(call, chunk))
        };
        draft.finish(call);
        Some(summary)
    }
}

fn record_generation_config(call: &mut LlmCall, config: &Value) {
    record_numbers(call, config, GENERATION_PARAMS);
    record_stop_sequences(call, config.get("stopSequences"));
    if let Some(count) = u64_at(config, "candidateCount").filter(|&n| n != 1) {
        call.set(attr::REQUEST_CHOICE_COUNT, count);
    }
    let output_type = match str_at(config, "responseMimeType") {
        Some("application/json") => "json",
        Some("text/plain") => "text",
        _ => return,
    };
    call.set(attr::OUTPUT_TYPE, output_type);
}

/// Gemini's roles are "user" and "model" (and "function" in older requests).
fn role(role: &str) -> &str {
    match role {
        "model" => "assistant",
        "function" => "tool",
        other => other,
    }
}

/// A `Content` (`{role, parts}`) as OTel parts.
fn content_parts(content: &Value) -> Vec<Value> {
    array_at(content, "parts").iter().map(part).collect()
}

fn part(part: &Value) -> Value {
    if let Some(text) = str_at(part, "text") {
        return match part.get("thought").and_then(Value::as_bool) {
            Some(true) => reasoning_part(text),
            _ => text_part(text),
        };
    }
    if let Some(call) = object_at(part, "functionCall") {
        let arguments = call.get("args").cloned().unwrap_or_default();
        return tool_call_part(str_at(call, "id"), str_at(call, "name"), arguments);
    }
    if let Some(result) = object_at(part, "functionResponse") {
        let response = result.get("response").cloned().unwrap_or_default();
        return tool_call_response_part(str_at(result, "id"), response);
    }
    let kind = match part.as_object().and_then(|fields| fields.keys().next()) {
        Some(key) if key == "inlineData" => "blob",
        Some(key) if key == "fileData" => "file",
        Some(key) => key.as_str(),
        None => "unknown",
    };
    opaque_part(kind)
}

/// `{functionDeclarations: [...]}` lists functions; other tools (`googleSearch`,
/// `codeExecution`, ...) are one built-in each.
fn tool_definitions(tool: &Value) -> Vec<Value> {
    let Some(fields) = tool.as_object() else {
        return Vec::new();
    };
    fields
        .iter()
        .flat_map(|(kind, spec)| match kind.as_str() {
            "functionDeclarations" => array_at(tool, kind)
                .iter()
                .map(|declaration| {
                    let schema = if declaration.get("parametersJsonSchema").is_some() {
                        "parametersJsonSchema"
                    } else {
                        "parameters"
                    };
                    tool_definition("function", declaration, schema)
                })
                .collect(),
            _ => vec![tool_definition(kind, spec, "parameters")],
        })
        .collect()
}

/// Whole responses and every stream chunk name themselves alike.
fn record_identity(call: &mut LlmCall, response: &Value) {
    if let Some(id) = str_at(response, "responseId") {
        call.set(attr::RESPONSE_ID, id);
    }
    if let Some(model) = str_at(response, "modelVersion") {
        call.set(attr::RESPONSE_MODEL, model);
    }
}

/// Output stays the candidates' count; thinking is reported apart, as reasoning.
fn usage(report: &Value) -> Usage {
    Usage {
        input: u64_at(report, "promptTokenCount"),
        output: u64_at(report, "candidatesTokenCount"),
        cache_read: u64_at(report, "cachedContentTokenCount"),
        cache_creation: None,
        reasoning: u64_at(report, "thoughtsTokenCount"),
    }
}

fn record_candidates(call: &mut LlmCall, candidates: &[Value]) {
    let reasons = candidates
        .iter()
        .filter_map(|candidate| str_at(candidate, "finishReason"))
        .map(Value::from);
    call.set_list(attr::RESPONSE_FINISH_REASONS, reasons.collect());
    let messages = candidates.iter().map(|candidate| {
        let content = candidate.get("content");
        let parts = content.map(content_parts).unwrap_or_default();
        output_message("assistant", parts, str_at(candidate, "finishReason"))
    });
    call.set_list(attr::OUTPUT_MESSAGES, messages.collect());
}

/// The response being reassembled from stream chunks, each a whole `GenerateContentResponse`
/// holding the next parts of each candidate.
#[derive(Default)]
struct ResponseDraft {
    candidates: BTreeMap<u64, CandidateDraft>,
    usage: Usage,
}

#[derive(Default)]
struct CandidateDraft {
    parts: Vec<Value>,
    finish_reason: Option<String>,
}

impl ResponseDraft {
    fn absorb(&mut self, call: &mut LlmCall, chunk: &Value) -> Seen {
        if let Some(error) = ProviderError::from_body(chunk) {
            error.record(call, "stream_error");
            return Seen::NOTHING;
        }
        record_identity(call, chunk);
        if let Some(report) = object_at(chunk, "usageMetadata") {
            self.usage.update(usage(report));
        }
        let mut output = false;
        let mut finished = false;
        for candidate in array_at(chunk, "candidates") {
            let draft = self
                .candidates
                .entry(u64_at(candidate, "index").unwrap_or(0))
                .or_default();
            output |= draft.absorb(candidate);
            finished |= draft.finish_reason.is_some();
        }
        // No end-of-stream event: the chunk carrying a finish reason is the last.
        Seen::output_then_end(output, finished)
    }

    fn finish(self, call: &mut LlmCall) {
        self.usage.record(call);
        let candidates: Vec<Value> = self
            .candidates
            .into_values()
            .map(|draft| {
                json!({"content": {"parts": draft.parts}, "finishReason": draft.finish_reason})
            })
            .collect();
        record_candidates(call, &candidates);
    }
}

impl CandidateDraft {
    /// Appends a chunk's parts, joining text onto text of the same kind so a stream reads like
    /// the whole response; true if it carried output.
    fn absorb(&mut self, candidate: &Value) -> bool {
        if let Some(reason) = str_at(candidate, "finishReason") {
            self.finish_reason = Some(reason.to_owned());
        }
        let parts = candidate
            .get("content")
            .map_or(&[][..], |c| array_at(c, "parts"));
        for part in parts {
            self.push(part);
        }
        !parts.is_empty()
    }

    fn push(&mut self, part: &Value) {
        let thought = |p: &Value| p.get("thought").and_then(Value::as_bool) == Some(true);
        if let (Some(text), Some(last)) = (str_at(part, "text"), self.parts.last_mut())
            && str_at(last, "text").is_some()
            && thought(last) == thought(part)
            && let Some(Value::String(joined)) = last.get_mut("text")
        {
            joined.push_str(text);
            return;
        }
        self.parts.push(part.clone());
    }
}

/// `:embedContent` (`{content, outputDimensionality}`) and `:batchEmbedContents`
/// (`{requests: [...]}`); responses carry vectors, no usage.
struct EmbedApi;

impl ApiReader for EmbedApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        let first = array_at(request, "requests").first().unwrap_or(request);
        record_numbers(
            call,
            first,
            &[("outputDimensionality", attr::EMBEDDINGS_DIMENSION_COUNT)],
        );
    }

    fn read_json_response(&self, _call: &mut LlmCall, _response: &Value) {}
}
