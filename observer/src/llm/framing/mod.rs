//! Framings that LLM APIs stream responses in, shared by every provider.
//! Each reads a whole decoded body and reports, per frame, the offset where it completed,
//! so `Body::time_at` gives its arrival time.
pub mod eventstream;
pub mod json_array;
pub mod ndjson;
pub mod sse;

/// One frame of a text framing: its bytes, and the offset of its last byte in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextFrame<'a> {
    pub data: &'a [u8],
    pub completed_at: usize,
}
