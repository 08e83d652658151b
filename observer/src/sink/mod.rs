//! The sinks: where finished spans go. Each is independent of the others.
pub mod background;
mod jsonl;
pub mod otlp;
mod output;
mod pretty;
pub mod store;
pub mod summary;

pub use background::BackgroundSink;
pub use jsonl::JsonlSink;
pub use pretty::PrettySink;
pub use summary::Summary;

use crate::{metrics::QueueHealth, span::Span};

pub trait Sink: Send {
    fn write(&mut self, span: &Span) -> anyhow::Result<()>;
    /// Called once at the end: write out what is buffered.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// The sink's queue, if it has one (for the health metrics).
    fn queue(&self) -> Option<QueueHealth> {
        None
    }
}
