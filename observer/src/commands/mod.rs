//! What each subcommand does, once its flags are resolved into a [`Config`].
mod stored;
mod watch;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use observer::{
    capture::record::{RecordReader, RecordWriter},
    config::Config,
    pipeline::Pipeline,
    serve::Access,
    sink::SummarySink,
    store::Store,
};

pub use stored::{serve, show, traces};

use crate::cli::{CaptureArgs, ReplayArgs, RunArgs};

pub fn capture(args: CaptureArgs) -> Result<ExitCode> {
    watch_live(args.config()?, args.record, args.command)
}

/// The daemon: the whole host (or the configured processes) into the configured sinks.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    // Each file it writes is made private (see `private_file`); the daemon runs no one's
    // commands, so whatever else gets created (by a library, by a later change) is private too.
    // SAFETY: umask only swaps the process's file creation mask.
    unsafe { libc::umask(0o077) };
    watch_live(args.config()?, None, Vec::new())
}

/// Captures into the configured sinks (and the recording, if any) until stopped, or until
/// `command`, when given, exits.
fn watch_live(config: Config, record: Option<PathBuf>, command: Vec<String>) -> Result<ExitCode> {
    let llm = config.llm_stage()?;
    let recorder = record.as_deref().map(RecordWriter::create).transpose()?;
    let sinks = config.build_sinks()?;
    let otlp_metrics = config
        .otlp_export()?
        .filter(|export| export.metrics.is_some());
    let web = web_view(&config)?;
    let watch = watch::Watch {
        pids: config.filters.pids,
        comms: config.filters.comms,
        command,
        recorder,
        metrics_addr: config.metrics.enabled.then_some(config.metrics.listen),
        otlp_metrics,
        web,
    };
    watch::watch_and_report(watch, llm, sinks)
}

/// The web view over the store being written, when `[serve]` asks for it.
fn web_view(config: &Config) -> Result<Option<watch::WebView>> {
    let serve = &config.serve;
    if !serve.enabled {
        return Ok(None);
    }
    if !config.store.enabled {
        anyhow::bail!("[serve] shows the store, which is off: enable [store] or disable [serve]");
    }
    Ok(Some(watch::WebView {
        access: Access::choose(&serve.listen, serve.auth_token.clone(), serve.no_auth)?,
        store: Store::open_existing(&config.store.path)?,
        listen: serve.listen,
    }))
}

pub fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let config = args.config()?;
    let reader = RecordReader::open(&args.file)?;
    let summary = SummarySink::default();
    let mut sinks = config.build_sinks()?;
    sinks.push(Box::new(summary.clone()));
    let mut pipeline = Pipeline::new(config.llm_stage()?, sinks);
    let mut last_ts = 0;
    for event in reader {
        let event = event?;
        last_ts = last_ts.max(event.ts());
        pipeline.on_event(event);
    }
    pipeline.finish(last_ts);
    let quiet = config.output.as_ref().is_some_and(|output| output.quiet);
    if !quiet {
        let report = pipeline.into_report();
        eprint!("{}", summary.summary().render(&report));
    }
    Ok(ExitCode::SUCCESS)
}
