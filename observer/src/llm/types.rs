//! What the LLM stage hands to the link stage.
use serde_json::{Map, Value};

/// One recognised LLM API call: the provider's view of an [`crate::http::Exchange`].
#[derive(Clone, Debug, PartialEq)]
pub struct LlmCall {
    /// `gen_ai.provider.name`, e.g. "openai", "anthropic".
    pub provider: String,
    /// `gen_ai.operation.name`, e.g. "chat", "embeddings", "text_completion".
    pub operation: String,
    /// `gen_ai.request.model`, when the request names one.
    pub request_model: Option<String>,
    /// Flat OpenTelemetry attributes (`gen_ai.*`, `error.type`, and the provider's extras),
    /// JSON-valued. Includes `gen_ai.provider.name`, `gen_ai.operation.name` and
    /// `gen_ai.request.model` too, so the map alone is a complete account of the call.
    pub attributes: Map<String, Value>,
}
