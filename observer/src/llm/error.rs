//! Errors the provider reported, in a response body or in a stream event.
use serde_json::Value;

use super::json::str_at;
use super::{LlmCall, attr};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProviderError {
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

impl ProviderError {
    /// An error object: OpenAI's `{type, code, message}`, Anthropic's `{type, message}`,
    /// the Responses API's `{code, message}`, Gemini's `{code: 429, status, message}`.
    pub fn from_object(error: &Value) -> Self {
        let code = error.get("code").and_then(|code| match code {
            Value::String(code) => Some(code.clone()),
            Value::Number(code) => Some(code.to_string()),
            _ => None,
        });
        ProviderError {
            // A type of "error" (Responses API stream events) names nothing.
            kind: str_at(error, "type")
                .filter(|kind| *kind != "error")
                .or_else(|| str_at(error, "status"))
                .map(str::to_owned),
            code,
            message: str_at(error, "message").map(str::to_owned),
        }
    }

    /// A body reporting an error: `{"error": {...}}` (OpenAI, Gemini, and Anthropic inside
    /// `{"type": "error", ...}`), or `{"error": "text"}` as Ollama and some compatible servers
    /// send. Only for bodies known to be errors: [`Self::from_error_body`] also reads bare
    /// messages.
    pub fn from_body(body: &Value) -> Option<Self> {
        Self::from_member(body.get("error"))
    }

    /// A body's `error` member: an error object, or only its message.
    pub fn from_member(error: Option<&Value>) -> Option<Self> {
        match error? {
            error @ Value::Object(_) => Some(Self::from_object(error)),
            Value::String(message) => Some(Self::with_message(message)),
            _ => None,
        }
    }

    /// The body of an HTTP error response: as [`Self::from_body`], or a bare `{"message": ...}`
    /// (Bedrock, Cohere).
    pub fn from_error_body(body: &Value) -> Option<Self> {
        Self::from_body(body).or_else(|| str_at(body, "message").map(Self::with_message))
    }

    pub fn with_message(message: &str) -> Self {
        ProviderError {
            message: Some(message.to_owned()),
            ..Self::default()
        }
    }

    /// The error, its type named elsewhere (an AWS header or event-stream exception type).
    pub fn with_kind(self, kind: &str) -> Self {
        ProviderError {
            kind: Some(kind.to_owned()),
            ..self
        }
    }

    /// Records the error; `error.type` is the provider's type, else its code, else `fallback_type`.
    pub fn record(self, call: &mut LlmCall, fallback_type: &str) {
        let error_type = self
            .kind
            .clone()
            .or_else(|| self.code.clone())
            .unwrap_or_else(|| fallback_type.to_owned());
        call.set(attr::ERROR_TYPE, error_type);
        if let Some(code) = self.code {
            call.set(attr::OBSERVER_ERROR_CODE, code);
        }
        if let Some(message) = self.message {
            call.set(attr::OBSERVER_ERROR_MESSAGE, message);
        }
    }
}
