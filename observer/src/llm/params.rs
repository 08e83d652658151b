//! Request parameters that most LLM APIs name alike.
use serde_json::Value;

use super::json::str_at;
use super::{LlmCall, attr};

/// `gen_ai.request.model`, when the body names one (Azure deployments do not).
pub(crate) fn record_model(call: &mut LlmCall, request: &Value) {
    if let Some(model) = str_at(request, "model") {
        call.set_request_model(model);
    }
}

/// `gen_ai.request.stream`: whether the request asked for a streamed response.
pub(crate) fn record_stream(call: &mut LlmCall, request: &Value) {
    let stream = request.get("stream").and_then(Value::as_bool);
    call.set(attr::REQUEST_STREAM, stream.unwrap_or(false));
}

/// Copies numeric request fields to their attributes; `fields` pairs a field with its key.
pub(crate) fn record_numbers(call: &mut LlmCall, request: &Value, fields: &[(&str, &str)]) {
    for (field, key) in fields {
        if let Some(number) = request.get(field).filter(|v| v.is_number()) {
            call.set(key, number.clone());
        }
    }
}

/// `gen_ai.request.stop_sequences` from a field holding one string or a list of them.
pub(crate) fn record_stop_sequences(call: &mut LlmCall, stop: Option<&Value>) {
    let sequences: Vec<Value> = match stop {
        Some(Value::String(one)) => vec![one.as_str().into()],
        Some(Value::Array(many)) => many.iter().filter(|s| s.is_string()).cloned().collect(),
        _ => Vec::new(),
    };
    call.set_list(attr::REQUEST_STOP_SEQUENCES, sequences);
}
