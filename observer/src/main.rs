//! `observer`: see every LLM API call on this host, with no code change.
use std::{
    fs::{File, OpenOptions},
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use observer::{
    capture::{
        CaptureEvent, CaptureOptions, CaptureStats, LiveCapture,
        record::{RecordReader, RecordWriter},
    },
    config::{Config, ContentConfig, ContentMode, CostConfig, OtlpConfig},
    llm,
    metrics::{self, Metrics},
    pipeline::{Pipeline, Report},
    query::{
        self, DEFAULT_LIMIT, Filter, OrderBy, Query,
        render::{self, Style},
        tree::{self, AttributeSelection},
    },
    serve,
    sink::{JsonlSink, OtlpOptions, PrettySink, Sink, otlp_sink, store_sink, summary::Health},
    store::{self, Retention, Store},
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
    /// The daemon: watch the whole host and keep every call in the store (and/or export OTLP).
    Run(RunArgs),
    /// List stored traces (or spans), newest first.
    Traces(TracesArgs),
    /// Draw one stored trace as a tree of its spans.
    Show(ShowArgs),
    /// Serve the store as a JSON API over HTTP.
    Serve(ServeArgs),
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
    #[command(flatten)]
    content: ContentArgs,
}

/// What spans keep of message text, and how calls are priced.
#[derive(clap::Args)]
struct ContentArgs {
    /// Message text in spans: full; redacted (lengths and hashes); none (metadata only).
    /// Secrets are redacted in every mode.
    #[arg(long, value_enum, value_name = "MODE")]
    content: Option<ContentMode>,
    /// Cut strings in span attributes past this many bytes, with a marker [default: 262144].
    #[arg(long, value_name = "BYTES")]
    max_string_bytes: Option<usize>,
    /// USD prices per million tokens searched before the built-in table (TOML, in the format
    /// of observer/data/prices.toml).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
}

impl ContentArgs {
    /// The flags over what the configuration file says.
    fn merged_into(&self, content: &mut ContentConfig, cost: &mut CostConfig) {
        content.mode = self.content.unwrap_or(content.mode);
        content.max_string_bytes = self.max_string_bytes.or(content.max_string_bytes);
        cost.prices = self.prices.clone().or(cost.prices.take());
    }
}

/// Sets up the LLM stage's content handling and prices, once, before any span is made.
fn configure_llm(content: &ContentConfig, cost: &CostConfig) -> Result<()> {
    llm::content::configure(llm::content::ContentOptions {
        mode: content.mode,
        max_string_bytes: content
            .max_string_bytes
            .unwrap_or(llm::content::DEFAULT_MAX_STRING_BYTES),
    });
    if let Some(path) = &cost.prices {
        llm::cost::use_user_prices(llm::cost::PriceTable::load(path)?);
    }
    Ok(())
}

fn configure_llm_from(args: &ContentArgs) -> Result<()> {
    let (mut content, mut cost) = (ContentConfig::default(), CostConfig::default());
    args.merged_into(&mut content, &mut cost);
    configure_llm(&content, &cost)
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
    #[command(flatten)]
    export: ExportArgs,
    /// Serve Prometheus metrics (GenAI calls, tokens, latency; the observer's health) at
    /// http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Run this command, trace it and its children, and stop when it exits.
    #[arg(last = true)]
    command: Vec<String>,
}

/// Sinks beyond the output: the store and OTLP.
#[derive(clap::Args)]
struct ExportArgs {
    /// Also keep spans in the store at PATH (default /var/lib/observer/observer.db).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = store::DEFAULT_PATH)]
    store: Option<PathBuf>,
    #[command(flatten)]
    otlp: OtlpArgs,
}

#[derive(clap::Args)]
struct OtlpArgs {
    /// Also export spans over OTLP/HTTP to this receiver (spans go to URL/v1/traces).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// A header sent with every export, e.g. `authorization=Bearer KEY` (repeatable).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_header)]
    otlp_header: Vec<(String, String)>,
    /// The service.name of exported spans [default: observer].
    #[arg(long, value_name = "NAME")]
    service_name: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A TOML configuration file (see deploy/observer.toml); the flags below override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Trace only this process and its descendants (repeatable).
    #[arg(long = "pid", short = 'p')]
    pids: Vec<u32>,
    /// Trace only processes with this command or executable name (repeatable).
    #[arg(long = "comm")]
    comms: Vec<String>,
    /// Where the store lives [default: /var/lib/observer/observer.db].
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Keep no store (export only).
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    /// Delete spans older than this many days [default: 7].
    #[arg(long, value_name = "DAYS")]
    retention_days: Option<u64>,
    /// Delete the oldest spans past this store size, 0 for no limit [default: 1024].
    #[arg(long, value_name = "MB")]
    max_size_mb: Option<u64>,
    /// Also append every span as a JSON line to this file.
    #[arg(long, value_name = "PATH")]
    jsonl: Option<PathBuf>,
    #[command(flatten)]
    otlp: OtlpArgs,
    #[command(flatten)]
    content: ContentArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Serve no metrics.
    #[arg(long, conflicts_with = "metrics_addr")]
    no_metrics: bool,
}

#[derive(clap::Args)]
struct DbArgs {
    /// The store to read.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    db: PathBuf,
}

#[derive(clap::Args)]
struct TracesArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Keep rows where ATTR OP VALUE holds (OP: eq, ne, gt, lt, contains; repeatable, all
    /// must hold), e.g. --where gen_ai.request.model eq gpt-4o
    #[arg(long = "where", num_args = 3, value_names = ["ATTR", "OP", "VALUE"], allow_hyphen_values = true)]
    filters: Vec<String>,
    /// Only what started within this long ago: 30s, 15m, 2h, 7d.
    #[arg(long, value_name = "DURATION", value_parser = query::parse_duration)]
    since: Option<Duration>,
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = query::parse_limit)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// FIELD ascending, -FIELD or FIELD:desc descending (default: newest first).
    #[arg(long, value_name = "FIELD", allow_hyphen_values = true)]
    order_by: Option<OrderBy>,
    /// List spans instead of traces.
    #[arg(long)]
    spans: bool,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

#[derive(clap::Args)]
struct ShowArgs {
    trace_id: String,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on; anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:4319")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every request.
    #[arg(long)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// A recording made with `observer capture --record FILE`.
    file: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    export: ExportArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Jsonl,
    Pretty,
}

fn main() -> ExitCode {
    // The exec gate is this executable re-run by the observer: nothing else may start in it.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == observer::capture::EXEC_GATE_ARG)
    {
        return observer::capture::run_exec_gate();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("observer=info"))
        .format_timestamp(
            std::env::var_os("OBSERVER_LOG_TIMES").map(|_| env_logger::TimestampPrecision::Micros),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Capture(args) => capture(args),
        Command::Replay(args) => replay(args),
        Command::Run(args) => run_config(args).and_then(run),
        Command::Traces(args) => traces(args),
        Command::Show(args) => show(args),
        Command::Serve(args) => serve_api(args),
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
    configure_llm_from(&args.output.content)?;
    let reader = RecordReader::open(&args.file)?;
    let mut sinks = sinks(&args.output)?;
    sinks.extend(export_sinks(args.export)?);
    let mut pipeline = Pipeline::new(sinks, Vec::new(), None);
    let mut last_ts = 0;
    for event in reader {
        let event = event?;
        last_ts = last_ts.max(event.ts());
        pipeline.on_event(event);
    }
    pipeline.finish(last_ts);
    if !args.output.quiet {
        let report = pipeline.into_report();
        eprint!("{}", report.summary.render(health(&report)));
    }
    Ok(ExitCode::SUCCESS)
}

fn health(report: &Report) -> Health {
    Health {
        given_up: report.given_up(),
    }
}

fn capture(args: CaptureArgs) -> Result<ExitCode> {
    configure_llm_from(&args.output.content)?;
    let recorder = args
        .record
        .as_deref()
        .map(RecordWriter::create)
        .transpose()?;
    let mut sinks = sinks(&args.output)?;
    sinks.extend(export_sinks(args.export)?);
    let watch = Watch {
        pids: args.pids,
        comms: args.comms,
        command: args.command,
        recorder,
        metrics_addr: args.metrics_addr,
    };
    watch_and_report(watch, sinks)
}

/// What a live session watches and records.
struct Watch {
    pids: Vec<u32>,
    comms: Vec<String>,
    /// A command to start and trace; empty: watch until Ctrl-C or SIGTERM.
    command: Vec<String>,
    recorder: Option<RecordWriter>,
    /// Where to serve Prometheus metrics, if anywhere.
    metrics_addr: Option<SocketAddr>,
}

/// Captures until stopped, feeding `sinks`, then prints the summary.
fn watch_and_report(args: Watch, sinks: Vec<Box<dyn Sink>>) -> Result<ExitCode> {
    let recorder = args.recorder;
    let options = CaptureOptions {
        pids: args.pids.clone(),
        scoped: !args.command.is_empty(),
        ..CaptureOptions::default()
    };
    let (capture, events) = LiveCapture::start(&options)?;

    let metrics = args.metrics_addr.map(|_| Metrics::new());
    let comms = args.comms.clone();
    let reported = metrics.clone();
    let pipeline = std::thread::Builder::new().name("pipeline".into()).spawn({
        let feedback = capture.feedback_handler();
        move || {
            let mut pipeline = Pipeline::new(sinks, comms, recorder);
            if let Some(metrics) = reported {
                pipeline.report_to(metrics);
            }
            pipeline.on_feedback(Box::new(feedback));
            run_pipeline(events, pipeline)
        }
    })?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The program's name only: its arguments may carry secrets (`--header "Authorization: …"`).
    let scope = if let Some(program) = args.command.first() {
        format!("command `{program}` and its children")
    } else if !args.pids.is_empty() {
        format!("pids {:?}", args.pids)
    } else {
        "the whole host".to_string()
    };
    let code = runtime.block_on(async {
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        if let (Some(addr), Some(metrics)) = (args.metrics_addr, &metrics) {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("serving metrics on {addr} (pick another --metrics-addr)")
            })?;
            eprintln!("metrics: http://{}/metrics", listener.local_addr()?);
            tokio::spawn(serve::serve(listener, metrics::router(metrics.clone())));
        }
        // The kernel's counters, read into the metrics while the capture runs.
        let kernel_health = async {
            let Some(metrics) = &metrics else {
                return std::future::pending().await;
            };
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                metrics.update_capture(&capture.stats());
            }
        };
        tokio::pin!(kernel_health);
        let child = if args.command.is_empty() {
            None
        } else {
            Some(spawn_traced(&args.command, &capture)?)
        };
        let stats = capture.stats();
        let held = if stats.gate.is_some() {
            "new programs held at exec until their probes are on"
        } else {
            "new programs not held at exec"
        };
        eprintln!(
            "ready: watching {scope}; {} processes followed, {held} (stop with Ctrl-C)",
            stats.follow.followed_now
        );
        let code = match child {
            Some(mut child) => tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    ExitCode::from(status.code().map_or(1, |c| c as u8))
                }
                _ = sigint.recv() => ExitCode::SUCCESS,
                _ = sigterm.recv() => ExitCode::SUCCESS,
                () = &mut kernel_health => ExitCode::SUCCESS,
            },
            None => {
                tokio::select! {
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                    () = &mut kernel_health => {}
                }
                ExitCode::SUCCESS
            }
        };
        anyhow::Ok(code)
    })?;

    let stats = capture.stop();
    let report = pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    let kernel = stats.kernel;
    if kernel.events_lost > 0 || kernel.calls_truncated > 0 {
        log::warn!(
            "{} events ({} bytes) lost in the ring buffer, {} TLS calls truncated past 2 MiB",
            kernel.events_lost,
            kernel.bytes_lost,
            kernel.calls_truncated
        );
    }
    eprint!(
        "{}",
        report
            .summary
            .render(health(&report))
    );
    eprintln!("{}", capture_cost(&stats));
    Ok(code)
}

fn run_pipeline(events: Receiver<CaptureEvent>, mut pipeline: Pipeline) -> Report {
    let mut last_ts = 0;
    loop {
        match events.recv_timeout(Duration::from_secs(1)) {
            Ok(event) => {
                last_ts = last_ts.max(event.ts());
                pipeline.on_event(event);
            }
            // A quiet host: time still passes for agent runs waiting to close.
            Err(RecvTimeoutError::Timeout) => pipeline.tick(store::now_unix_nanos()),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    pipeline.finish(last_ts);
    pipeline.into_report()
}

/// Starts `command` followed from its first instruction.
fn spawn_traced(command: &[String], capture: &LiveCapture) -> Result<tokio::process::Child> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given")
    };
    capture
        .spawn_followed(program, args)
        .with_context(|| format!("starting `{program}`"))
}

/// What following processes cost, for the end of the summary.
fn capture_cost(stats: &CaptureStats) -> String {
    let (kernel, follow) = (&stats.kernel, &stats.follow);
    let mut text = format!(
        "capture cost: {} processes followed ({} stopped as costly without an LLM call, {} \
         followed again); {} probe links opened, each for one process ({} probes host-wide); {} \
         probed calls; not copied: {} on connections not followed, {} responses to non-LLM requests, \
         {} socket writes that were not HTTP",
        follow.followed_total,
        follow.dropped_costly,
        follow.readmitted,
        follow.links_opened,
        follow.host_wide_probes,
        kernel.probe_hits,
        kernel.skipped_connection,
        kernel.skipped_response,
        kernel.skipped_not_http,
    );
    if let Some(gate) = &stats.gate {
        let average = gate
            .total_hold_time
            .checked_div(u32::try_from(gate.holds).unwrap_or(u32::MAX).max(1))
            .unwrap_or_default();
        text.push_str(&format!(
            "; {} execs and TLS library opens held (average {:.2} ms, longest {:.1} ms, {} let \
             go at the bound)",
            gate.holds,
            average.as_secs_f64() * 1e3,
            gate.max_hold_time.as_secs_f64() * 1e3,
            gate.released_by_gate
        ));
    }
    text
}

fn export_sinks(args: ExportArgs) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &args.store {
        let retention = Retention::default();
        sinks.push(Box::new(store_sink(
            Store::open(path, &retention)?,
            retention,
        )?));
    }
    if let Some(otlp) = args.otlp.merged_into(None)? {
        sinks.push(Box::new(otlp_sink(otlp_options(&otlp))?));
    }
    Ok(sinks)
}

fn parse_header(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => bail!("`{text}` is not NAME=VALUE (e.g. authorization=Bearer KEY)"),
    }
}

impl OtlpArgs {
    /// The flags over what the configuration file says (None: no OTLP export).
    fn merged_into(self, configured: Option<OtlpConfig>) -> Result<Option<OtlpConfig>> {
        let mut otlp = match (self.otlp_endpoint, configured) {
            (Some(endpoint), configured) => OtlpConfig {
                endpoint,
                ..configured.unwrap_or_else(|| OtlpConfig {
                    endpoint: String::new(),
                    headers: Default::default(),
                    service_name: None,
                })
            },
            (None, Some(configured)) => configured,
            (None, None) if self.otlp_header.is_empty() && self.service_name.is_none() => {
                return Ok(None);
            }
            (None, None) => bail!("--otlp-header and --service-name need --otlp-endpoint URL"),
        };
        otlp.headers.extend(self.otlp_header);
        otlp.service_name = self.service_name.or(otlp.service_name);
        Ok(Some(otlp))
    }
}

fn otlp_options(config: &OtlpConfig) -> OtlpOptions {
    let mut options = OtlpOptions::new(&config.endpoint);
    options.headers = config.headers.clone().into_iter().collect();
    if let Some(name) = &config.service_name {
        options.service_name = name.clone();
    }
    options
}

/// The configuration file with the flags applied over it.
fn run_config(args: RunArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.pids.is_empty() {
        config.filters.pids = args.pids;
    }
    if !args.comms.is_empty() {
        config.filters.comms = args.comms;
    }
    if let Some(path) = args.store {
        config.store.path = path;
    }
    if args.no_store {
        config.store.enabled = false;
    }
    if let Some(days) = args.retention_days {
        config.store.retention_days = days;
    }
    if let Some(mb) = args.max_size_mb {
        config.store.max_size_mb = mb;
    }
    if let Some(path) = args.jsonl {
        config.jsonl = Some(observer::config::JsonlConfig { path });
    }
    config.otlp = args.otlp.merged_into(config.otlp)?;
    args.content
        .merged_into(&mut config.content, &mut config.cost);
    if let Some(addr) = args.metrics_addr {
        config.metrics.listen = addr;
    }
    if args.no_metrics {
        config.metrics.enabled = false;
    }
    Ok(config)
}

/// The daemon: the whole host (or the configured processes) into the configured sinks.
fn run(config: Config) -> Result<ExitCode> {
    configure_llm(&config.content, &config.cost)?;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if config.store.enabled {
        let retention = config.store.retention();
        let store = Store::open(&config.store.path, &retention).with_context(|| {
            format!(
                "opening the store {} (pass --store PATH for another place, or --no-store)",
                config.store.path.display()
            )
        })?;
        eprintln!("store: {}", store.path().display());
        sinks.push(Box::new(store_sink(store, retention)?));
    }
    if let Some(otlp) = &config.otlp {
        eprintln!("otlp: exporting to {}", otlp.endpoint);
        sinks.push(Box::new(otlp_sink(otlp_options(otlp))?));
    }
    if let Some(jsonl) = &config.jsonl {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl.path)
            .with_context(|| format!("opening {}", jsonl.path.display()))?;
        eprintln!("jsonl: appending to {}", jsonl.path.display());
        sinks.push(Box::new(JsonlSink::new(Box::new(file))));
    }
    if sinks.is_empty() {
        bail!("nothing to do: the store is off and no OTLP endpoint or jsonl file is set");
    }
    let watch = Watch {
        pids: config.filters.pids,
        comms: config.filters.comms,
        command: Vec::new(),
        recorder: None,
        metrics_addr: config.metrics.enabled.then_some(config.metrics.listen),
    };
    watch_and_report(watch, sinks)
}

fn traces(args: TracesArgs) -> Result<ExitCode> {
    let store = Store::open_existing(&args.db.db)?;
    let query = Query {
        filters: args
            .filters
            .chunks(3)
            .map(|f| Filter::new(&f[0], &f[1], &f[2]))
            .collect::<Result<_>>()?,
        since: args.since,
        limit: args.limit,
        offset: args.offset,
        order_by: args.order_by,
    };
    let output = match (args.spans, args.format) {
        (false, ListFormat::Table) => render::traces_table(&store.traces(&query)?),
        (true, ListFormat::Table) => render::spans_table(&store.spans(&query)?),
        (false, ListFormat::Json) => {
            pretty_json(&serde_json::json!({ "traces": store.traces(&query)? }))
        }
        (true, ListFormat::Json) => {
            let spans: Vec<_> = store
                .spans(&query)?
                .iter()
                .map(|span| tree::span_json(span, &AttributeSelection::All))
                .collect();
            pretty_json(&serde_json::json!({ "spans": spans }))
        }
    };
    print!("{output}");
    Ok(ExitCode::SUCCESS)
}

fn pretty_json(value: &serde_json::Value) -> String {
    format!("{value:#}\n")
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let store = Store::open_existing(&args.db.db)?;
    let spans = store.trace_spans(&args.trace_id)?;
    if spans.is_empty() {
        bail!(
            "no trace {} in {}; `observer traces` lists the stored ones",
            args.trace_id,
            args.db.db.display()
        );
    }
    let style = Style {
        color: std::io::stdout().is_terminal(),
    };
    print!(
        "{}",
        render::trace_tree(&args.trace_id, &tree::build_forest(spans), style)
    );
    Ok(ExitCode::SUCCESS)
}

fn serve_api(args: ServeArgs) -> Result<ExitCode> {
    serve::check_exposure(&args.listen, args.token.as_deref())?;
    let store = Store::open_existing(&args.db.db)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "serving {} on http://{}/api/traces (stop with Ctrl-C)",
            args.db.db.display(),
            listener.local_addr()?
        );
        serve::serve(listener, serve::router(store, args.token)).await
    })?;
    Ok(ExitCode::SUCCESS)
}
