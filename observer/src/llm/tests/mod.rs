//! Tests through the entry point, [`super::recognise`], with realistic wire bodies.
mod anthropic;
mod cohere;
mod errors;
mod openai_chat;
mod openai_other;
mod openai_responses;
mod robustness;
pub(crate) mod support;
