//! The command line: every subcommand's flags, and what they mean for the [`Config`].
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use observer::{
    config::{
        Config, ContentFlags, ContentMode, Flags, OtlpFlags, OutputConfig, OutputFormat, Protocol,
    },
    query::{self, DEFAULT_LIMIT, OrderBy},
    store,
};

#[derive(Parser)]
#[command(
    name = "observer",
    version,
    about = "Zero-code LLM call observer: eBPF TLS capture to GenAI spans"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Serve the store as web pages (traces, calls, usage) and a JSON API over HTTP.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
pub struct OutputArgs {
    /// Where spans go: a file, or - for standard output.
    #[arg(long, short, default_value = "-")]
    output: String,
    /// jsonl: one JSON object per span; pretty: one readable line per span.
    /// Default: pretty on a terminal, jsonl otherwise.
    #[arg(long, short)]
    format: Option<OutputFormat>,
    /// No live view on stderr when spans go to a file.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    content: ContentArgs,
}

/// What spans keep of message text, and how calls are priced.
#[derive(clap::Args)]
pub struct ContentArgs {
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

#[derive(clap::Args)]
pub struct CaptureArgs {
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
    pub record: Option<PathBuf>,
    #[command(flatten)]
    export: ExportArgs,
    /// Serve Prometheus metrics (GenAI calls, tokens, latency; the observer's health) at
    /// http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Run this command, trace it and its children, and stop when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Sinks beyond the output: the store and OTLP.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Also keep spans in the store at PATH (default /var/lib/observer/observer.db).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = store::DEFAULT_PATH)]
    store: Option<PathBuf>,
    #[command(flatten)]
    otlp: OtlpArgs,
}

/// OTLP export; what these leave out comes from the config file, then from the standard
/// OTEL_EXPORTER_OTLP_* variables.
#[derive(clap::Args)]
pub struct OtlpArgs {
    /// Also export spans over OTLP to this receiver (HTTP: spans go to URL/v1/traces; gRPC:
    /// the target, e.g. http://collector:4317).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// grpc or http/protobuf [default: http/protobuf].
    #[arg(long, value_name = "PROTOCOL")]
    otlp_protocol: Option<Protocol>,
    /// A header sent with every export, e.g. `authorization=Bearer KEY` (repeatable).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_header)]
    otlp_header: Vec<(String, String)>,
    /// The service.name of exported spans [default: observer].
    #[arg(long, value_name = "NAME")]
    service_name: Option<String>,
    /// Also export the metrics (GenAI client metrics, the observer's health) over OTLP.
    #[arg(long)]
    otlp_metrics: bool,
}

#[derive(clap::Args)]
pub struct RunArgs {
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
    /// Delete spans older than this many days, 0 for no limit [default: 7].
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
pub struct DbArgs {
    /// The store to read.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    pub db: PathBuf,
}

#[derive(clap::Args)]
pub struct TracesArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Keep rows where ATTR OP VALUE holds (OP: eq, ne, gt, lt, contains; repeatable, all
    /// must hold), e.g. --where gen_ai.request.model eq gpt-4o
    #[arg(long = "where", num_args = 3, value_names = ["ATTR", "OP", "VALUE"], allow_hyphen_values = true)]
    pub filters: Vec<String>,
    /// Only what started within this long ago: 30s, 15m, 2h, 7d.
    #[arg(long, value_name = "DURATION", value_parser = query::parse_duration)]
    pub since: Option<Duration>,
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = query::parse_limit)]
    pub limit: u32,
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// FIELD ascending, -FIELD or FIELD:desc descending (default: newest first).
    #[arg(long, value_name = "FIELD", allow_hyphen_values = true)]
    pub order_by: Option<OrderBy>,
    /// List spans instead of traces.
    #[arg(long)]
    pub spans: bool,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    pub trace_id: String,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on; anything but loopback needs --auth-token.
    #[arg(long, default_value = "127.0.0.1:4319")]
    pub listen: SocketAddr,
    /// The token every request must carry (`Authorization: Bearer TOKEN`, or once in the
    /// address for a browser) [default: a random one, printed with the address]. Other users
    /// can read a command line: prefer the default, or OBSERVER_AUTH_TOKEN.
    #[arg(
        long,
        alias = "token",
        value_name = "TOKEN",
        env = "OBSERVER_AUTH_TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// Answer every request without a token. Anyone who can reach the port (every user of
    /// this host, on loopback) then reads every stored prompt and answer: for a single-user
    /// machine only. Refused off loopback.
    #[arg(long, conflicts_with = "auth_token")]
    pub no_auth: bool,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A recording made with `observer capture --record FILE`.
    pub file: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    export: ExportArgs,
}

fn parse_header(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => bail!("`{text}` is not NAME=VALUE (e.g. authorization=Bearer KEY)"),
    }
}

// What each command's flags mean for the one configuration model.

impl CaptureArgs {
    pub fn config(&self) -> Result<Config> {
        let flags = Flags {
            pids: self.pids.clone(),
            comms: self.comms.clone(),
            content: self.output.content.flags(),
            // Metrics only when asked for, where the daemon serves them by default.
            metrics_enabled: self.metrics_addr.map(|_| true),
            metrics_listen: self.metrics_addr,
            ..self.export.flags()
        };
        Config::with_output(self.output.config()).overridden_by(flags)
    }
}

impl ReplayArgs {
    pub fn config(&self) -> Result<Config> {
        let flags = Flags {
            content: self.output.content.flags(),
            // A recording's spans are as old as it is: a replay into a store keeps them.
            retention_days: Some(0),
            ..self.export.flags()
        };
        Config::with_output(self.output.config()).overridden_by(flags)
    }
}

impl RunArgs {
    /// The configuration file (or the defaults) with the flags applied over it.
    pub fn config(&self) -> Result<Config> {
        let file = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        file.overridden_by(Flags {
            pids: self.pids.clone(),
            comms: self.comms.clone(),
            store_enabled: self.no_store.then_some(false),
            store_path: self.store.clone(),
            retention_days: self.retention_days,
            max_size_mb: self.max_size_mb,
            jsonl: self.jsonl.clone(),
            otlp: self.otlp.flags(),
            content: self.content.flags(),
            metrics_enabled: self.no_metrics.then_some(false),
            metrics_listen: self.metrics_addr,
        })
    }
}

impl OutputArgs {
    fn config(&self) -> OutputConfig {
        OutputConfig {
            path: self.output.clone(),
            format: self.format,
            quiet: self.quiet,
        }
    }
}

impl ExportArgs {
    /// `--store` turns the store on, where `capture` and `replay` keep none by default.
    fn flags(&self) -> Flags {
        Flags {
            store_enabled: self.store.as_ref().map(|_| true),
            store_path: self.store.clone(),
            otlp: self.otlp.flags(),
            ..Flags::default()
        }
    }
}

impl ContentArgs {
    fn flags(&self) -> ContentFlags {
        ContentFlags {
            mode: self.content,
            max_string_bytes: self.max_string_bytes,
            prices: self.prices.clone(),
        }
    }
}

impl OtlpArgs {
    fn flags(&self) -> OtlpFlags {
        OtlpFlags {
            endpoint: self.otlp_endpoint.clone(),
            headers: self.otlp_header.clone(),
            service_name: self.service_name.clone(),
            protocol: self.otlp_protocol,
            metrics: self.otlp_metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from(std::iter::once("observer").chain(args.iter().copied()))
            .expect("valid arguments");
        match cli.command {
            Command::Capture(args) => args.config(),
            Command::Replay(args) => args.config(),
            Command::Run(args) => args.config(),
            _ => unreachable!("a command that watches or replays"),
        }
        .expect("a configuration")
    }

    #[test]
    fn the_daemon_defaults_to_metadata_only_and_capture_to_full_content() {
        assert_eq!(config(&["run"]).content.mode, ContentMode::None);
        assert_eq!(config(&["capture"]).content.mode, ContentMode::Full);
        assert_eq!(config(&["replay", "x.rec"]).content.mode, ContentMode::Full);
        assert_eq!(
            config(&["run", "--content", "full"]).content.mode,
            ContentMode::Full
        );
        assert_eq!(
            config(&["capture", "--content", "redacted"]).content.mode,
            ContentMode::Redacted
        );
    }
}
