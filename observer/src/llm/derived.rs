//! Attributes derived from what a provider's reader recorded, the same for every provider:
//! the prompt fingerprint, the cost, and the names other backends read (OpenInference).
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{LlmCall, attr, cost};

/// Adds the derived attributes to a fully read call.
pub(crate) fn record(call: &mut LlmCall, prices: &cost::Prices) {
    if let Some(fingerprint) = prompt_fingerprint(&call.attributes) {
        call.set(attr::OBSERVER_PROMPT_FINGERPRINT, fingerprint);
    }
    cost::record(call, prices);
    record_compat(call);
}

/// What makes two calls "the same prompt" whatever the conversation: the provider, the model,
/// the request parameters, the system instructions, the tools and the output type. Messages,
/// streaming and ids are left out.
fn prompt_fingerprint(attributes: &Map<String, Value>) -> Option<String> {
    let request_model = attributes.get(attr::REQUEST_MODEL)?;
    let mut parts = Map::new();
    parts.insert(attr::REQUEST_MODEL.into(), request_model.clone());
    for (key, value) in attributes {
        let parameter = key.starts_with(attr::REQUEST_PREFIX) && key != attr::REQUEST_STREAM;
        let shaping = [
            attr::PROVIDER_NAME,
            attr::OPERATION_NAME,
            attr::SYSTEM_INSTRUCTIONS,
            attr::TOOL_DEFINITIONS,
            attr::OUTPUT_TYPE,
        ]
        .contains(&key.as_str());
        if parameter || shaping {
            parts.insert(key.clone(), value.clone());
        }
    }
    let canonical = canonical_json(&Value::Object(parts));
    let digest = Sha256::digest(canonical.as_bytes());
    // 64 bits tell prompt versions apart well enough and stay readable.
    Some(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// JSON with object keys sorted at every level, so equal values hash alike however their
/// keys were ordered.
fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for key in keys {
                    out.insert(key.clone(), sorted(&map[key]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// OpenInference's names (Phoenix, Arize and others read them), copied from the GenAI ones.
fn record_compat(call: &mut LlmCall) {
    let kind = match call.operation.as_str() {
        "embeddings" => "EMBEDDING",
        "execute_tool" => "TOOL",
        _ => "LLM",
    };
    call.set(attr::OPENINFERENCE_SPAN_KIND, kind);
    let model = call
        .attribute(attr::RESPONSE_MODEL)
        .or_else(|| call.attribute(attr::REQUEST_MODEL))
        .cloned();
    if let Some(model) = model {
        call.set(attr::LLM_MODEL_NAME, model);
    }
    let count = |key| call.attribute(key).and_then(Value::as_u64);
    let (input, output) = (
        count(attr::USAGE_INPUT_TOKENS),
        count(attr::USAGE_OUTPUT_TOKENS),
    );
    if let Some(input) = input {
        call.set(attr::LLM_TOKEN_COUNT_PROMPT, input);
    }
    if let Some(output) = output {
        call.set(attr::LLM_TOKEN_COUNT_COMPLETION, output);
    }
    if input.is_some() || output.is_some() {
        let total = input.unwrap_or(0).saturating_add(output.unwrap_or(0));
        call.set(attr::LLM_TOKEN_COUNT_TOTAL, total);
    }
    // Only a conversation the request named itself: sessions are never guessed here.
    if let Some(conversation) = call.attribute(attr::CONVERSATION_ID).cloned() {
        call.set(attr::SESSION_ID, conversation);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(attributes: Value) -> LlmCall {
        let mut call = LlmCall::new("openai", "chat");
        for (key, value) in attributes.as_object().unwrap() {
            call.set(key, value.clone());
        }
        call
    }

    #[test]
    fn fingerprint_ignores_messages_and_key_order_but_not_parameters() {
        let base = json!({"gen_ai.request.model": "gpt-4o", "gen_ai.request.temperature": 0.2,
            "gen_ai.system_instructions": [{"type": "text", "content": "Be brief."}],
            "gen_ai.input.messages": [{"role": "user", "parts": []}]});
        let mut a = call(base.clone());
        let mut other_messages = base.clone();
        other_messages["gen_ai.input.messages"] = json!([]);
        other_messages["gen_ai.request.stream"] = json!(true);
        let mut b = call(other_messages);
        let mut warmer = base.clone();
        warmer["gen_ai.request.temperature"] = json!(0.9);
        let mut c = call(warmer);
        let mut other_system = base;
        other_system["gen_ai.system_instructions"] =
            json!([{"type": "text", "content": "Be long."}]);
        let mut d = call(other_system);
        for call in [&mut a, &mut b, &mut c, &mut d] {
            record(call, &Default::default());
        }
        let fingerprint = |c: &LlmCall| c.attribute(attr::OBSERVER_PROMPT_FINGERPRINT).cloned();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_ne!(fingerprint(&a), fingerprint(&d));
        assert_eq!(fingerprint(&a).unwrap().as_str().unwrap().len(), 16);
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
            r#"{"a":{"c":3,"d":2},"b":1}"#
        );
    }

    #[test]
    fn openinference_names_follow_the_genai_ones() {
        let mut c = call(json!({"gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 30}));
        record(&mut c, &Default::default());
        assert_eq!(c.attribute("openinference.span.kind"), Some(&json!("LLM")));
        assert_eq!(
            c.attribute("llm.model_name"),
            Some(&json!("gpt-4o-2024-08-06"))
        );
        assert_eq!(c.attribute("llm.token_count.prompt"), Some(&json!(12)));
        assert_eq!(c.attribute("llm.token_count.completion"), Some(&json!(30)));
        assert_eq!(c.attribute("llm.token_count.total"), Some(&json!(42)));
        assert_eq!(c.attribute("session.id"), None);
        let mut embedding = LlmCall::new("openai", "embeddings");
        embedding.set(attr::CONVERSATION_ID, "conv_1");
        record(&mut embedding, &Default::default());
        assert_eq!(
            embedding.attribute("openinference.span.kind"),
            Some(&json!("EMBEDDING"))
        );
        assert_eq!(embedding.attribute("session.id"), Some(&json!("conv_1")));
        assert_eq!(embedding.attribute(attr::OBSERVER_PROMPT_FINGERPRINT), None);
    }
}
