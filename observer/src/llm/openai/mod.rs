//! OpenAI's HTTP APIs, and every server that copies them (Azure OpenAI, vLLM, Groq, Ollama's
//! `/v1`, ...): recognised by path suffix on any host.
mod choices;
mod embeddings;
mod responses;

use serde_json::Value;

use super::exchange::{ApiReader, read_call};
use super::json::{object_at, u64_at};
use super::origin::{is_post, provider_name, request_path};
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
}

impl Endpoint {
    fn operation(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses => "chat",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Completions => "text_completion",
        }
    }

    fn reader(self) -> &'static dyn ApiReader {
        match self {
            Endpoint::ChatCompletions => &choices::ChoicesApi::Chat,
            Endpoint::Completions => &choices::ChoicesApi::Legacy,
            Endpoint::Responses => &responses::ResponsesApi,
            Endpoint::Embeddings => &embeddings::EmbeddingsApi,
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

impl Provider for OpenAi {
    type Endpoint = Endpoint;

    fn endpoint(&self, request: &Request) -> Option<Endpoint> {
        if !is_post(request) {
            return None;
        }
        let path = request_path(&request.target).trim_end_matches('/');
        ENDPOINTS
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix))
            .map(|(_, endpoint)| *endpoint)
    }

    fn parse(&self, endpoint: Endpoint, exchange: &Exchange) -> LlmCall {
        let provider = provider_name(&exchange.request, "openai");
        read_call(provider, endpoint.operation(), exchange, endpoint.reader())
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
    if let Some(report) = object_at(body, "usage") {
        usage(report).record(call);
    }
}

/// `gen_ai.output.type` from a requested response format (`response_format.type`,
/// Responses' `text.format.type`).
fn record_output_type(call: &mut LlmCall, format: Option<&Value>) {
    let output_type = match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("text") => "text",
        Some("json_object" | "json_schema") => "json",
        _ => return,
    };
    call.set(attr::OUTPUT_TYPE, output_type);
}
