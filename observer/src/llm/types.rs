//! What the LLM stage hands to the link stage.
use serde_json::{Map, Value};

use super::{attr, keys::LinkKeys};

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
    /// What places the call in its conversation, for the link stage.
    pub link: LinkKeys,
}

impl LlmCall {
    /// A call with only its provider and operation known.
    pub fn new(provider: &str, operation: &str) -> Self {
        let mut call = LlmCall {
            provider: provider.to_owned(),
            operation: operation.to_owned(),
            request_model: None,
            attributes: Map::new(),
            link: LinkKeys::default(),
        };
        call.set(attr::PROVIDER_NAME, provider);
        call.set(attr::OPERATION_NAME, operation);
        call
    }

    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.attributes.insert(key.to_owned(), value.into());
    }

    /// Sets `key` unless an earlier, more specific finding already did.
    pub fn set_default(&mut self, key: &str, value: impl Into<Value>) {
        self.attributes.entry(key).or_insert_with(|| value.into());
    }

    /// Sets `key` to a JSON array, unless there is nothing to list.
    pub fn set_list(&mut self, key: &str, items: Vec<Value>) {
        if !items.is_empty() {
            self.set(key, items);
        }
    }

    pub fn set_request_model(&mut self, model: &str) {
        self.request_model = Some(model.to_owned());
        self.set(attr::REQUEST_MODEL, model);
    }
}
