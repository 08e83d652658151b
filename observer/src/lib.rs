//! The observer's pipeline, one module per stage:
//! capture → reassemble → http → llm → link → sink.
pub mod capture;
pub mod http;
pub mod llm;
pub mod reassemble;
pub mod redact;
