//! The LLM stage: recognises LLM API calls among HTTP exchanges and reads them into
//! [`LlmCall`]s carrying OpenTelemetry GenAI attributes.
//!
//! Each API family is a [`Provider`] in its own file, listed once in `PROVIDERS`. Framings that
//! several providers stream in (SSE, ...) live in [`framing`], shared.
pub mod attr;
pub mod framing;
pub mod types;
pub use types::*;

mod anthropic;
mod error;
mod exchange;
mod json;
mod openai;
mod origin;
mod otel;
mod params;
mod stream;
mod usage;

#[cfg(test)]
mod tests;

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
}

impl<P: Provider> Recogniser for P {
    fn recognise(&self, exchange: &Exchange) -> Option<LlmCall> {
        let endpoint = self.endpoint(&exchange.request)?;
        Some(self.parse(endpoint, exchange))
    }
}

/// Asked in order; the first to claim an exchange reads it. Providers that recognise by
/// path on any host (OpenAI-compatible) go last.
static PROVIDERS: &[&dyn Recogniser] = &[&anthropic::Anthropic, &openai::OpenAi];

/// The LLM call an exchange makes, if it makes one.
pub fn recognise(exchange: &Exchange) -> Option<LlmCall> {
    PROVIDERS
        .iter()
        .find_map(|provider| provider.recognise(exchange))
}
