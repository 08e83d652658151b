//! The observer's pipeline, one module per stage:
//! capture → reassemble → http → llm → link → sink.
pub mod capture;
pub mod http;
pub mod link;
pub mod llm;
pub mod pipeline;
pub mod reassemble;
pub mod redact;
pub mod sink;
pub mod span;
