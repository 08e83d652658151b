//! The LLM stage: recognises LLM API calls among HTTP exchanges and reads them into
//! [`LlmCall`]s carrying OpenTelemetry GenAI attributes.
//!
//! Each API family is a [`Provider`] in its own file, listed once in `PROVIDERS`. Framings that
//! several providers stream in (SSE, NDJSON, AWS event stream, JSON arrays) live in [`framing`], shared.
pub mod attr;
pub mod framing;
pub mod keys;
pub mod types;
pub use keys::LinkKeys;
pub use types::*;

mod anthropic;
mod bedrock;
mod cohere;
pub mod content;
pub mod cost;
mod derived;
mod error;
mod estimate;
mod exchange;
mod gemini;
mod json;
mod ollama;
mod openai;
mod origin;
mod otel;
mod params;
mod ratelimit;
mod stream;
mod usage;

#[cfg(test)]
pub(crate) mod tests;

use crate::http::{Exchange, Request};

/// An LLM API family.
pub trait Provider: Sync {
    /// Which of the family's APIs a request calls.
    type Endpoint;

    /// Decides from the request alone whether the exchange belongs to this provider.
    fn endpoint(&self, request: &Request) -> Option<Self::Endpoint>;

    /// Reads the exchange; never fails: whatever parsed ends up in the call.
    fn parse(&self, endpoint: Self::Endpoint, exchange: &Exchange) -> LlmCall;
}

/// [`Provider`] with its endpoint type erased, so providers can share one list.
trait Recogniser: Sync {
    fn recognise(&self, exchange: &Exchange) -> Option<LlmCall>;

    fn is_call(&self, request: &Request) -> bool;
}

impl<P: Provider> Recogniser for P {
    fn is_call(&self, request: &Request) -> bool {
        self.endpoint(request).is_some()
    }

    fn recognise(&self, exchange: &Exchange) -> Option<LlmCall> {
        let endpoint = self.endpoint(&exchange.request)?;
        Some(self.parse(endpoint, exchange))
    }
}

/// Asked in order; the first to claim an exchange reads it. The most specific paths go first;
/// OpenAI's, which any OpenAI-compatible server copies, last.
static PROVIDERS: &[&dyn Recogniser] = &[
    &anthropic::Anthropic,
    &gemini::Gemini,
    &bedrock::Bedrock,
    &cohere::Cohere,
    &ollama::Ollama,
    &openai::OpenAi,
];

/// Whether some provider would report the exchange this request starts: its response is
/// worth reading.
pub fn is_llm_request(request: &Request) -> bool {
    PROVIDERS.iter().any(|provider| provider.is_call(request))
}

/// The stage's settings: what calls keep of message text, and the prices they are costed at.
#[derive(Clone, Debug, Default)]
pub struct LlmStage {
    pub content: content::ContentOptions,
    pub prices: cost::Prices,
}

/// An LLM call, and what the link stage needs to place it.
pub struct Recognised {
    pub call: LlmCall,
    pub keys: LinkKeys,
}

impl LlmStage {
    /// The LLM call an exchange makes, if it makes one.
    pub fn recognise(&self, exchange: &Exchange) -> Option<Recognised> {
        let mut call = PROVIDERS
            .iter()
            .find_map(|provider| provider.recognise(exchange))?;
        let keys = keys::read(&mut call, &exchange.request.headers);
        derived::record(&mut call, &self.prices);
        // Last: the keys, the fingerprint and the cost are read from the whole content.
        content::apply(&mut call, self.content);
        Some(Recognised { call, keys })
    }
}
