//! The observer's pipeline, one module per stage:
//! capture → reassemble → http → llm (and mcp) → link → sink.
pub mod callers;
pub mod capture;
pub mod config;
pub mod health;
pub mod http;
pub mod link;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod private_file;
pub mod query;
pub mod reassemble;
pub mod redact;
pub mod serve;
pub mod sink;
pub mod span;
pub mod store;
