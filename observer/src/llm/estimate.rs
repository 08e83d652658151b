//! Token usage estimated with OpenAI's tokenizers, for streams that report none (OpenAI chat
//! without `stream_options.include_usage`). Marked `observer.usage.source = "estimated"`.
//!
//! The approximation: OpenAI's cookbook formula ("How to count tokens with tiktoken"): each
//! message costs its text's tokens plus 3 for its framing (role included), and every reply is
//! primed with 3 more. Tool calls count their name and JSON arguments; tool definitions and
//! images are not counted. Other providers' models get `cl100k_base`, a fair stand-in for
//! their own BPE vocabularies.
use serde_json::Value;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use super::json::{array_at, str_at};
use super::{LlmCall, attr};

const TOKENS_PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

/// Estimates input and output tokens from the call's messages, where the provider reported none.
pub(crate) fn estimate_missing_usage(call: &mut LlmCall) {
    let reported = [attr::USAGE_INPUT_TOKENS, attr::USAGE_OUTPUT_TOKENS]
        .iter()
        .any(|key| call.attribute(key).is_some());
    // Building a tokenizer takes a noticeable fraction of a second: only when there is text.
    let has_text = [
        attr::INPUT_MESSAGES,
        attr::SYSTEM_INSTRUCTIONS,
        attr::OUTPUT_MESSAGES,
    ]
    .iter()
    .any(|key| call.attribute(key).and_then(Value::as_array).is_some());
    if reported || !has_text {
        return;
    }
    let bpe = tokenizer_for(call);
    let input = input_tokens(call, bpe);
    let output = call
        .attribute(attr::OUTPUT_MESSAGES)
        .and_then(Value::as_array)
        .map(|messages| messages.iter().map(|m| content_tokens(m, bpe)).sum::<u64>());
    if input.is_none() && output.is_none() {
        return;
    }
    if let Some(input) = input {
        call.set(attr::USAGE_INPUT_TOKENS, input);
    }
    if let Some(output) = output {
        call.set(attr::USAGE_OUTPUT_TOKENS, output);
    }
    call.set(attr::OBSERVER_USAGE_SOURCE, "estimated");
}

/// `o200k_base` for the models that use it (gpt-4o, gpt-4.1, o-series, gpt-5), else `cl100k_base`.
/// Each is built once per process: building one takes a noticeable fraction of a second.
fn tokenizer_for(call: &LlmCall) -> &'static CoreBPE {
    let model = [attr::RESPONSE_MODEL, attr::REQUEST_MODEL]
        .iter()
        .find_map(|key| call.attribute(key).and_then(Value::as_str))
        .unwrap_or_default();
    match get_tokenizer(model) {
        Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => tiktoken_rs::o200k_base_singleton(),
        _ => tiktoken_rs::cl100k_base_singleton(),
    }
}

fn input_tokens(call: &LlmCall, bpe: &CoreBPE) -> Option<u64> {
    let messages = call
        .attribute(attr::INPUT_MESSAGES)
        .and_then(Value::as_array);
    // Instructions given beside the messages (Anthropic, Gemini) frame like a system message.
    let system = call
        .attribute(attr::SYSTEM_INSTRUCTIONS)
        .and_then(Value::as_array);
    if messages.is_none() && system.is_none() {
        return None;
    }
    let messages = messages.map_or(0, |messages| {
        messages
            .iter()
            .map(|message| {
                let role = str_at(message, "role").map_or(0, |role| count(bpe, role));
                TOKENS_PER_MESSAGE + role + content_tokens(message, bpe)
            })
            .sum()
    });
    let system = system.map_or(0, |parts| {
        TOKENS_PER_MESSAGE + parts.iter().map(|part| part_tokens(part, bpe)).sum::<u64>()
    });
    Some(messages + system + REPLY_PRIMING)
}

fn content_tokens(message: &Value, bpe: &CoreBPE) -> u64 {
    array_at(message, "parts")
        .iter()
        .map(|part| part_tokens(part, bpe))
        .sum::<u64>()
}

fn part_tokens(part: &Value, bpe: &CoreBPE) -> u64 {
    match str_at(part, "type") {
        Some("text" | "reasoning") => count(bpe, str_at(part, "content").unwrap_or_default()),
        Some("tool_call") => {
            let name = str_at(part, "name").map_or(0, |name| count(bpe, name));
            name + json_tokens(part.get("arguments"), bpe)
        }
        Some("tool_call_response") => json_tokens(part.get("response"), bpe),
        _ => 0,
    }
}

/// A string as its text, anything else as compact JSON (how arguments travel).
fn json_tokens(value: Option<&Value>, bpe: &CoreBPE) -> u64 {
    match value {
        None | Some(Value::Null) => 0,
        Some(Value::String(text)) => count(bpe, text),
        Some(other) => count(bpe, &other.to_string()),
    }
}

fn count(bpe: &CoreBPE, text: &str) -> u64 {
    bpe.encode_ordinary(text).len() as u64
}
