//! Framings that LLM APIs stream responses in, shared by every provider.
//! Each reads a whole decoded body and reports, per frame, the offset where it completed,
//! so `Body::time_at` gives its arrival time.
pub mod sse;
