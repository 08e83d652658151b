//! The sinks: where finished spans go. Each is independent of the others.
mod jsonl;
mod pretty;
pub mod summary;

pub use jsonl::JsonlSink;
pub use pretty::PrettySink;
pub use summary::Summary;

use crate::span::Span;

pub trait Sink: Send {
    fn write(&mut self, span: &Span) -> anyhow::Result<()>;
    /// Called once at the end: write out what is buffered.
    fn flush(&mut self) -> anyhow::Result<()>;
}
