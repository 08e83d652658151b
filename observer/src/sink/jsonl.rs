//! One JSON object per span per line.
use std::io::Write;

use anyhow::Context;

use super::Sink;
use crate::{config::JsonlConfig, private_file, span::Span};

pub struct JsonlSink {
    out: Box<dyn Write + Send>,
}

impl JsonlSink {
    pub fn new(out: Box<dyn Write + Send>) -> JsonlSink {
        JsonlSink { out }
    }
}

impl JsonlConfig {
    /// A sink appending to the configured file (private: see `private_file`).
    pub fn build(&self) -> anyhow::Result<JsonlSink> {
        let file = private_file::append(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        Ok(JsonlSink::new(Box::new(file)))
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        // One write per span: serialising straight into an unbuffered file costs a system call
        // per JSON token.
        let mut line = serde_json::to_vec(span)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        // Spans are rare next to the bytes behind them: flush each so a reader sees it at once.
        self.out.flush()?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
