//! OpenAI's HTTP APIs, and every server that copies them (Azure OpenAI, vLLM, Groq, Ollama's
//! `/v1`, ...): recognised by path suffix on any host.
mod choices;
mod embeddings;
mod other;
mod responses;

pub(crate) use choices::{message_parts, record_chat_messages};

use serde_json::Value;

use super::exchange::{ApiReader, read_call};
use super::json::{object_at, u64_at};
use super::origin::{is_post, known_provider, provider_name, request_path};
use super::usage::Usage;
use super::{LlmCall, Provider, attr};
use crate::http::{Exchange, Request};

pub(crate) struct OpenAi;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
    /// The legacy `/completions` API.
    Completions,
    /// The other API families, read for operation, model, usage and status only.
    Other(Family),
}

/// OpenAI's other endpoint families, and their operation names. The GenAI conventions name
/// no operation for most: where one fits it is used, else a lowercase descriptive name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// `/images/generations|edits|variations`: the conventions' "generate_content" (multimodal
    /// output), with `gen_ai.output.type` "image".
    Images,
    /// `/audio/transcriptions`: "transcription".
    Transcription,
    /// `/audio/translations`: "translation".
    Translation,
    /// `/audio/speech`: "generate_content", with `gen_ai.output.type` "speech".
    Speech,
    /// `/moderations`: "moderation".
    Moderation,
    /// `/files…`: "files"; `/batches…`: "batches"; `/fine_tuning/jobs…`: "fine_tuning";
    /// `/models…`: "models". Management calls, no model is run.
    Files,
    Batches,
    FineTuning,
    Models,
}

impl Endpoint {
    fn operation(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses => "chat",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Completions => "text_completion",
            Endpoint::Other(Family::Images | Family::Speech) => "generate_content",
            Endpoint::Other(Family::Transcription) => "transcription",
            Endpoint::Other(Family::Translation) => "translation",
            Endpoint::Other(Family::Moderation) => "moderation",
            Endpoint::Other(Family::Files) => "files",
            Endpoint::Other(Family::Batches) => "batches",
            Endpoint::Other(Family::FineTuning) => "fine_tuning",
            Endpoint::Other(Family::Models) => "models",
        }
    }

    fn reader(self) -> &'static dyn ApiReader {
        match self {
            Endpoint::ChatCompletions => &choices::ChoicesApi::Chat,
            Endpoint::Completions => &choices::ChoicesApi::Legacy,
            Endpoint::Responses => &responses::ResponsesApi,
            Endpoint::Embeddings => &embeddings::EmbeddingsApi,
            Endpoint::Other(Family::Images) => &other::IMAGES,
            Endpoint::Other(Family::Speech) => &other::SPEECH,
            Endpoint::Other(_) => &other::PLAIN,
        }
    }
}

/// Path suffixes, most specific first: `/chat/completions` also ends in `/completions`.
const ENDPOINTS: &[(&str, Endpoint)] = &[
    ("/chat/completions", Endpoint::ChatCompletions),
    ("/completions", Endpoint::Completions),
    ("/responses", Endpoint::Responses),
    ("/embeddings", Endpoint::Embeddings),
];

/// The other families, by the path after the API root (`/v1/`, or Azure's
/// `/openai/deployments/{deployment}/`); a prefix ending at a segment boundary.
const FAMILIES: &[(&str, Family)] = &[
    ("images/generations", Family::Images),
    ("images/edits", Family::Images),
    ("images/variations", Family::Images),
    ("audio/transcriptions", Family::Transcription),
    ("audio/translations", Family::Translation),
    ("audio/speech", Family::Speech),
    ("moderations", Family::Moderation),
    ("files", Family::Files),
    ("batches", Family::Batches),
    ("fine_tuning/jobs", Family::FineTuning),
    ("models", Family::Models),
];

impl Provider for OpenAi {
    type Endpoint = Endpoint;

    fn endpoint(&self, request: &Request) -> Option<Endpoint> {
        let path = request_path(&request.target).trim_end_matches('/');
        let generation = ENDPOINTS
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix))
            .map(|(_, endpoint)| *endpoint);
        match generation {
            Some(endpoint) => is_post(request).then_some(endpoint),
            None => family(request, path).map(Endpoint::Other),
        }
    }

    fn parse(&self, endpoint: Endpoint, exchange: &Exchange) -> LlmCall {
        let provider = provider_name(&exchange.request, "openai");
        read_call(provider, endpoint.operation(), exchange, endpoint.reader())
    }
}

/// One of the other families, only from a known host, or under `/v1/` with credentials:
/// `/v1/files` on an unknown host without them is someone else's API.
fn family(request: &Request, path: &str) -> Option<Family> {
    let trusted = known_provider(request).is_some()
        || (path.starts_with("/v1/") && request.headers.get("authorization").is_some());
    if !trusted {
        return None;
    }
    let rest = api_relative(path)?;
    FAMILIES
        .iter()
        .find(|(prefix, _)| {
            rest.strip_prefix(prefix)
                .is_some_and(|tail| tail.is_empty() || tail.starts_with('/'))
        })
        .map(|(_, family)| *family)
}

/// The path after the API root: `/v1/x` → `x`, `/openai/deployments/d/x` → `x`, `/openai/v1/x` → `x`.
fn api_relative(path: &str) -> Option<&str> {
    if let Some((_, rest)) = path.split_once("/v1/") {
        return Some(rest);
    }
    let rest = path.strip_prefix("/openai/")?;
    match rest.strip_prefix("deployments/") {
        Some(deployment_and_rest) => deployment_and_rest.split_once('/').map(|(_, rest)| rest),
        None => Some(rest),
    }
}

/// Usage in either of OpenAI's spellings: `prompt_tokens`/`completion_tokens` (Chat
/// Completions, Completions, Embeddings) or `input_tokens`/`output_tokens` (Responses).
fn usage(report: &Value) -> Usage {
    let detail =
        |details: &str, field: &str| object_at(report, details).and_then(|d| u64_at(d, field));
    Usage {
        input: u64_at(report, "prompt_tokens").or_else(|| u64_at(report, "input_tokens")),
        output: u64_at(report, "completion_tokens").or_else(|| u64_at(report, "output_tokens")),
        cache_read: detail("prompt_tokens_details", "cached_tokens")
            .or_else(|| detail("input_tokens_details", "cached_tokens")),
        cache_creation: None,
        reasoning: detail("completion_tokens_details", "reasoning_tokens")
            .or_else(|| detail("output_tokens_details", "reasoning_tokens")),
    }
}

fn record_usage(call: &mut LlmCall, body: &Value) {
    record_usage_report(call, body.get("usage"));
}

/// A body's `usage` member, read when it is an object.
fn record_usage_report(call: &mut LlmCall, report: Option<&Value>) {
    if let Some(report) = report.filter(|report| report.is_object()) {
        usage(report).record(call);
    }
}

/// `gen_ai.output.type` from a requested response format (`response_format.type`,
/// Responses' `text.format.type`).
pub(crate) fn record_output_type(call: &mut LlmCall, format: Option<&Value>) {
    let output_type = match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("text") => "text",
        Some("json_object" | "json_schema") => "json",
        _ => return,
    };
    call.set(attr::OUTPUT_TYPE, output_type);
}
