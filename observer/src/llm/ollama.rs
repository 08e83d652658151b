//! Ollama's native API: `POST /api/chat` (chat), `/api/generate` (text completion),
//! `/api/embed` and `/api/embeddings` (embeddings). Streams by default, as NDJSON whose last
//! line has `done: true` with the counts. Claimed on Ollama's port or host, or when the body
//! names a model: `/api/chat` is too common a path to claim on its own.
use serde_json::{Value, json};

use super::error::ProviderError;
use super::exchange::{ApiReader, read_call, record_identity};
use super::json::{array_at, object_at, str_at, u64_at};
use super::openai::{message_parts, record_chat_messages};
use super::origin::{is_post, known_host_or_names_model, provider_name, request_path};
use super::otel::{input_message, output_message, text_part};
use super::params::{record_model, record_numbers, record_stop_sequences};
use super::stream::{Seen, StreamSummary, read_ndjson};
use super::usage::Usage;
use super::{LlmCall, Provider, attr};
use crate::http::{Body, Exchange, Request, Response};

pub(crate) struct Ollama;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Generate,
    Embed,
}

impl Provider for Ollama {
    type Endpoint = Endpoint;

    fn endpoint(&self, request: &Request) -> Option<Endpoint> {
        if !is_post(request) {
            return None;
        }
        let endpoint = match request_path(&request.target).trim_end_matches('/') {
            "/api/chat" => Endpoint::Chat,
            "/api/generate" => Endpoint::Generate,
            "/api/embed" | "/api/embeddings" => Endpoint::Embed,
            _ => return None,
        };
        known_host_or_names_model(request).then_some(endpoint)
    }

    fn parse(&self, endpoint: Endpoint, exchange: &Exchange) -> LlmCall {
        let provider = provider_name(&exchange.request, "ollama");
        match endpoint {
            Endpoint::Chat => read_call(provider, "chat", exchange, &GenerationApi::Chat),
            Endpoint::Generate => read_call(
                provider,
                "text_completion",
                exchange,
                &GenerationApi::Generate,
            ),
            Endpoint::Embed => read_call(provider, "embeddings", exchange, &EmbedApi),
        }
    }
}

/// `/api/chat` (messages in, `message` out) and `/api/generate` (`prompt` in, `response` out):
/// one envelope, one stream shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GenerationApi {
    Chat,
    Generate,
}

/// Sampling parameters sit in `options`.
const OPTIONS: &[(&str, &str)] = &[
    ("temperature", attr::REQUEST_TEMPERATURE),
    ("top_p", attr::REQUEST_TOP_P),
    ("top_k", attr::REQUEST_TOP_K),
    ("num_predict", attr::REQUEST_MAX_TOKENS),
    ("seed", attr::REQUEST_SEED),
    ("presence_penalty", attr::REQUEST_PRESENCE_PENALTY),
    ("frequency_penalty", attr::REQUEST_FREQUENCY_PENALTY),
];

impl ApiReader for GenerationApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        // Ollama streams unless told not to.
        let stream = request.get("stream").and_then(Value::as_bool);
        call.set(attr::REQUEST_STREAM, stream.unwrap_or(true));
        if let Some(options) = object_at(request, "options") {
            record_numbers(call, options, OPTIONS);
            record_stop_sequences(call, options.get("stop"));
        }
        if request.get("format").is_some_and(|f| !f.is_null()) {
            call.set(attr::OUTPUT_TYPE, "json");
        }
        match self {
            GenerationApi::Chat => record_chat_messages(call, request, message_parts),
            GenerationApi::Generate => {
                if let Some(system) = str_at(request, "system") {
                    call.set(attr::SYSTEM_INSTRUCTIONS, vec![text_part(system)]);
                }
                let prompt = str_at(request, "prompt").unwrap_or_default();
                let message = input_message("user", vec![text_part(prompt)]);
                call.set(attr::INPUT_MESSAGES, vec![message]);
            }
        }
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        let mut draft = MessageDraft::default();
        draft.absorb(*self, call, response);
        draft.finish(call);
    }

    fn is_stream(&self, response: &Response) -> bool {
        let declared = response
            .headers
            .get("content-type")
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("ndjson"));
        declared || response.body.data.trim_ascii().contains(&b'\n')
    }

    fn read_stream_response(&self, call: &mut LlmCall, body: &Body) -> Option<StreamSummary> {
        let mut draft = MessageDraft::default();
        let summary = read_ndjson(body, |line| draft.absorb(*self, call, line));
        draft.finish(call);
        Some(summary)
    }
}

/// The output being reassembled from stream lines (or read from the one whole response).
#[derive(Default)]
struct MessageDraft {
    content: String,
    thinking: String,
    tool_calls: Vec<Value>,
    done_reason: Option<String>,
    usage: Usage,
    seen_output: bool,
}

impl MessageDraft {
    fn absorb(&mut self, api: GenerationApi, call: &mut LlmCall, line: &Value) -> Seen {
        if let Some(error) = ProviderError::from_body(line) {
            error.record(call, "stream_error");
            return Seen::NOTHING;
        }
        record_identity(call, line);
        let (content, thinking, tool_calls) = match api {
            GenerationApi::Chat => {
                let message = line.get("message").unwrap_or(&Value::Null);
                (
                    str_at(message, "content"),
                    str_at(message, "thinking"),
                    array_at(message, "tool_calls"),
                )
            }
            GenerationApi::Generate => {
                (str_at(line, "response"), str_at(line, "thinking"), &[][..])
            }
        };
        let before = (
            self.content.len(),
            self.thinking.len(),
            self.tool_calls.len(),
        );
        self.content.push_str(content.unwrap_or_default());
        self.thinking.push_str(thinking.unwrap_or_default());
        self.tool_calls.extend(tool_calls.iter().cloned());
        let output = before
            != (
                self.content.len(),
                self.thinking.len(),
                self.tool_calls.len(),
            );
        self.seen_output |= output;
        let done = line.get("done").and_then(Value::as_bool) == Some(true);
        if done {
            self.done_reason = str_at(line, "done_reason").map(str::to_owned);
            self.usage = Usage {
                input: u64_at(line, "prompt_eval_count"),
                output: u64_at(line, "eval_count"),
                ..Usage::default()
            };
        }
        Seen::output_then_end(output, done)
    }

    fn finish(self, call: &mut LlmCall) {
        self.usage.record(call);
        let reason = self.done_reason.as_deref();
        if let Some(reason) = reason {
            call.set(attr::RESPONSE_FINISH_REASONS, vec![reason]);
        }
        if !self.seen_output && reason.is_none() {
            return;
        }
        let message = json!({
            "content": self.content,
            "thinking": self.thinking,
            "tool_calls": self.tool_calls,
        });
        let output = output_message("assistant", message_parts(&message), reason);
        call.set(attr::OUTPUT_MESSAGES, vec![output]);
    }
}

/// `/api/embed` (`{model, input, dimensions}` → `{embeddings, prompt_eval_count}`) and the
/// older `/api/embeddings` (`{model, prompt}` → `{embedding}`).
struct EmbedApi;

impl ApiReader for EmbedApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        record_numbers(
            call,
            request,
            &[("dimensions", attr::EMBEDDINGS_DIMENSION_COUNT)],
        );
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        Usage {
            input: u64_at(response, "prompt_eval_count"),
            ..Usage::default()
        }
        .record(call);
    }
}
