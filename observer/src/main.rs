//! `observer`: see every LLM API call on this host, with no code change.
use std::{
    fs::File,
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    sync::mpsc::Receiver,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use observer::{
    capture::{
        CaptureEvent, CaptureOptions, LiveCapture,
        record::{RecordReader, RecordWriter},
    },
    pipeline::{Pipeline, Report},
    sink::{JsonlSink, PrettySink, Sink, summary::Health},
};

#[derive(Parser)]
#[command(
    name = "observer",
    version,
    about = "Zero-code LLM call observer: eBPF TLS capture to GenAI spans"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the host (or some processes) and print every LLM API call as it completes.
    Capture(CaptureArgs),
    /// Re-run the pipeline on a recording made with `capture --record` (no root needed).
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct OutputArgs {
    /// Where spans go: a file, or - for standard output.
    #[arg(long, short, default_value = "-")]
    output: String,
    /// jsonl: one JSON object per span; pretty: one readable line per span.
    /// Default: pretty on a terminal, jsonl otherwise.
    #[arg(long, short)]
    format: Option<Format>,
    /// No live view on stderr when spans go to a file.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct CaptureArgs {
    /// Trace only this process and its descendants (repeatable).
    #[arg(long = "pid", short = 'p')]
    pids: Vec<u32>,
    /// Trace only processes with this command or executable name (repeatable).
    #[arg(long = "comm")]
    comms: Vec<String>,
    #[command(flatten)]
    output: OutputArgs,
    /// Also write the raw captured events (secrets masked) to this file, for `observer replay`.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Run this command, trace it and its children, and stop when it exits.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// A recording made with `observer capture --record FILE`.
    file: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Jsonl,
    Pretty,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("observer=info"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Capture(args) => capture(args),
        Command::Replay(args) => replay(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("observer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn sinks(args: &OutputArgs) -> Result<Vec<Box<dyn Sink>>> {
    let stdout_terminal = std::io::stdout().is_terminal();
    let to_stdout = args.output == "-";
    let format = args.format.unwrap_or(if to_stdout && stdout_terminal {
        Format::Pretty
    } else {
        Format::Jsonl
    });
    let out: Box<dyn Write + Send> = if to_stdout {
        Box::new(std::io::stdout())
    } else {
        Box::new(File::create(&args.output).with_context(|| format!("creating {}", args.output))?)
    };
    let mut sinks: Vec<Box<dyn Sink>> = vec![match format {
        Format::Jsonl => Box::new(JsonlSink::new(out)),
        Format::Pretty => Box::new(PrettySink::new(out, to_stdout && stdout_terminal)),
    }];
    if format == Format::Jsonl && !to_stdout && !args.quiet {
        sinks.push(Box::new(PrettySink::new(
            Box::new(std::io::stderr()),
            std::io::stderr().is_terminal(),
        )));
    }
    Ok(sinks)
}

fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let reader = RecordReader::open(&args.file)?;
    let mut pipeline = Pipeline::new(sinks(&args.output)?, Vec::new(), None);
    let mut last_ts = 0;
    for event in reader {
        let event = event?;
        last_ts = last_ts.max(event.ts());
        pipeline.on_event(event);
    }
    pipeline.finish(last_ts);
    if !args.output.quiet {
        let report = pipeline.into_report();
        eprint!("{}", report.summary.render(health(&report, 0, 0)));
    }
    Ok(ExitCode::SUCCESS)
}

fn health(report: &Report, events_lost: u64, calls_truncated: u64) -> Health {
    Health {
        events_lost,
        calls_truncated,
        parse_failures: report.http.parse_failures,
    }
}

fn capture(args: CaptureArgs) -> Result<ExitCode> {
    let recorder = args
        .record
        .as_deref()
        .map(RecordWriter::create)
        .transpose()?;
    let sinks = sinks(&args.output)?;
    let options = CaptureOptions {
        pids: args.pids.clone(),
        filter_pids: !args.command.is_empty(),
    };
    let (capture, events) = LiveCapture::start(&options)?;

    let comms = args.comms.clone();
    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || run_pipeline(events, Pipeline::new(sinks, comms, recorder)))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let scope = if !args.command.is_empty() {
        format!("command `{}`", args.command.join(" "))
    } else if !args.pids.is_empty() {
        format!("pids {:?}", args.pids)
    } else {
        "the whole host".to_string()
    };
    let code = runtime.block_on(async {
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let child = if args.command.is_empty() {
            None
        } else {
            Some(spawn_traced(&args.command, &capture)?)
        };
        eprintln!(
            "ready: watching {scope}; {} TLS libraries attached (stop with Ctrl-C)",
            capture.attached_files()
        );
        let code = match child {
            Some(mut child) => tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    ExitCode::from(status.code().map_or(1, |c| c as u8))
                }
                _ = sigint.recv() => ExitCode::SUCCESS,
                _ = sigterm.recv() => ExitCode::SUCCESS,
            },
            None => {
                tokio::select! {
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                }
                ExitCode::SUCCESS
            }
        };
        anyhow::Ok(code)
    })?;

    let counters = capture.stop();
    let report = pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    if counters.events_lost > 0 || counters.calls_truncated > 0 {
        log::warn!(
            "{} events ({} bytes) lost in the ring buffer, {} TLS calls truncated past 2 MiB",
            counters.events_lost,
            counters.bytes_lost,
            counters.calls_truncated
        );
    }
    eprint!(
        "{}",
        report.summary.render(health(
            &report,
            counters.events_lost,
            counters.calls_truncated
        ))
    );
    Ok(code)
}

fn run_pipeline(events: Receiver<CaptureEvent>, mut pipeline: Pipeline) -> Report {
    let mut last_ts = 0;
    for event in events {
        last_ts = last_ts.max(event.ts());
        pipeline.on_event(event);
    }
    pipeline.finish(last_ts);
    pipeline.into_report()
}

/// Starts `command` traced from its first instruction: the observer watches itself while it
/// forks, so the kernel's fork tracepoint adds the child before it can run.
fn spawn_traced(command: &[String], capture: &LiveCapture) -> Result<tokio::process::Child> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given")
    };
    let own_pid = std::process::id();
    capture.watch_pid(own_pid)?;
    let spawned = tokio::process::Command::new(program).args(args).spawn();
    capture.unwatch_pid(own_pid)?;
    spawned.with_context(|| format!("starting `{program}`"))
}
