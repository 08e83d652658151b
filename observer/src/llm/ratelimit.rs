//! Rate-limit response headers as attributes, for every provider: what was left of the quota
//! and when it resets explain a 429 (and predict the next one).
use serde_json::Value;

use super::{LlmCall, attr};
use crate::http::Headers;

/// Records `x-ratelimit-{limit|remaining|reset}-{resource}` (OpenAI, Groq, Azure, ...),
/// `anthropic-ratelimit-{resource}-{limit|remaining|reset}` and `retry-after`.
pub(crate) fn record_rate_limits(call: &mut LlmCall, headers: &Headers) {
    for (name, value) in &headers.0 {
        let name = name.to_ascii_lowercase();
        let key = if name == "retry-after" {
            attr::OBSERVER_RATELIMIT_RETRY_AFTER.to_owned()
        } else if let Some(key) = openai_style(&name).or_else(|| anthropic_style(&name)) {
            key
        } else {
            continue;
        };
        call.set(&key, header_value(value));
    }
}

/// `x-ratelimit-remaining-tokens` → `observer.ratelimit.remaining_tokens`.
fn openai_style(name: &str) -> Option<String> {
    let rest = name.strip_prefix("x-ratelimit-")?;
    let (field, resource) = rest.split_once('-')?;
    key(field, resource)
}

/// `anthropic-ratelimit-input-tokens-reset` → `observer.ratelimit.reset_input_tokens`.
fn anthropic_style(name: &str) -> Option<String> {
    let rest = name.strip_prefix("anthropic-ratelimit-")?;
    let (resource, field) = rest.rsplit_once('-')?;
    key(field, resource)
}

fn key(field: &str, resource: &str) -> Option<String> {
    let known_field = matches!(field, "limit" | "remaining" | "reset");
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    (known_field && plain(resource)).then(|| {
        format!(
            "{}{field}_{}",
            attr::OBSERVER_RATELIMIT_PREFIX,
            resource.replace('-', "_")
        )
    })
}

/// Counts as integers; anything else (durations, dates) as sent.
fn header_value(value: &str) -> Value {
    let value = value.trim();
    value
        .parse::<u64>()
        .map_or_else(|_| Value::from(value), Value::from)
}
