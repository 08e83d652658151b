//! The sinks: where finished spans go. Each is independent of the others.
pub mod background;
mod jsonl;
pub mod otlp;
mod pretty;
pub mod store;
pub mod summary;

pub use background::BackgroundSink;
pub use jsonl::JsonlSink;
pub use pretty::PrettySink;
pub use summary::{Summary, SummarySink};

use crate::{
    health::{PipelineTotals, QueueHealth},
    span::Span,
};

pub trait Sink: Send {
    fn write(&mut self, span: &Span) -> anyhow::Result<()>;
    /// Called once at the end: write out what is buffered.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// The sink's queue, if it has one (for the health metrics).
    fn queue(&self) -> Option<QueueHealth> {
        None
    }
    /// The pipeline's health and every sink's queue, about once a second, for the sinks that
    /// report them.
    fn health(&mut self, _totals: &PipelineTotals, _queues: &[QueueHealth]) {}
}

/// Every sink: each span goes to all of them, in one place.
pub struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
    /// Spans written (to every sink).
    pub written: u64,
    /// Writes a sink refused.
    pub errors: u64,
}

impl Sinks {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Sinks {
        Sinks {
            sinks,
            written: 0,
            errors: 0,
        }
    }

    pub fn write_all(&mut self, spans: Vec<Span>) {
        for span in spans {
            self.written += 1;
            for sink in &mut self.sinks {
                if let Err(error) = sink.write(&span) {
                    self.errors += 1;
                    log::error!("writing a span failed: {error:#}");
                }
            }
        }
    }

    pub fn health(&mut self, totals: &PipelineTotals) {
        let queues: Vec<_> = self.sinks.iter().filter_map(|sink| sink.queue()).collect();
        for sink in &mut self.sinks {
            sink.health(totals, &queues);
        }
    }

    pub fn flush(&mut self) {
        for sink in &mut self.sinks {
            if let Err(error) = sink.flush() {
                log::error!("flushing a sink failed: {error:#}");
            }
        }
    }
}
