//! The output of `capture` and `replay`: every span to standard output or a file, and a live
//! view on stderr while JSON lines go to a file.
use std::{
    io::{IsTerminal, Write},
    path::Path,
};

use anyhow::Context;

use super::{OutputConfig, OutputFormat};
use crate::{
    private_file,
    sink::{JsonlSink, PrettySink, Sink},
};

impl OutputConfig {
    /// The output's sink, plus the live view when JSON lines go to a file.
    pub fn build(&self) -> anyhow::Result<Vec<Box<dyn Sink>>> {
        let stdout_terminal = std::io::stdout().is_terminal();
        let to_stdout = self.path == "-";
        let format = self.format.unwrap_or(if to_stdout && stdout_terminal {
            OutputFormat::Pretty
        } else {
            OutputFormat::Jsonl
        });
        let out: Box<dyn Write + Send> = if to_stdout {
            Box::new(std::io::stdout())
        } else {
            let file = private_file::create(Path::new(&self.path))
                .with_context(|| format!("creating {}", self.path))?;
            Box::new(file)
        };
        let mut sinks: Vec<Box<dyn Sink>> = vec![match format {
            OutputFormat::Jsonl => Box::new(JsonlSink::new(out)),
            OutputFormat::Pretty => Box::new(PrettySink::new(out, to_stdout && stdout_terminal)),
        }];
        if format == OutputFormat::Jsonl && !to_stdout && !self.quiet {
            sinks.push(Box::new(PrettySink::new(
                Box::new(std::io::stderr()),
                std::io::stderr().is_terminal(),
            )));
        }
        Ok(sinks)
    }
}
