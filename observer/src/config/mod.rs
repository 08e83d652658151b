//! One configuration for every command that watches or replays: which processes, where spans
//! go (the sinks), what they keep of message text, how calls are priced. `observer run` reads
//! it from a TOML file (`--config PATH`; `deploy/observer.toml` shows every setting), `capture`
//! and `replay` start from their own defaults; the flags override either ([`Flags`]).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;

pub use crate::llm::content::ContentMode;
use crate::{
    llm,
    sink::Sink,
    store::{self, Retention},
};
pub use otlp::{
    Compression, Env, MetricsExport, OtlpConfig, OtlpExport, OtlpFlags, Protocol, QueueLimits,
    Target, TlsFiles,
};

mod otlp;
mod output;
#[cfg(test)]
mod tests;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub filters: Filters,
    pub store: StoreConfig,
    pub otlp: Option<OtlpConfig>,
    pub jsonl: Option<JsonlConfig>,
    pub content: ContentConfig,
    pub cost: CostConfig,
    pub metrics: MetricsConfig,
    pub serve: ServeConfig,
    /// `capture` and `replay` show every span themselves; the daemon has no output of its own.
    #[serde(skip)]
    pub output: Option<OutputConfig>,
}

/// Which processes to watch; everything when both are empty.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Filters {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub retention_days: u64,
    pub max_size_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let retention = Retention::default();
        StoreConfig {
            enabled: true,
            path: PathBuf::from(store::DEFAULT_PATH),
            retention_days: retention.max_age.map_or(0, |age| age.as_secs() / 86_400),
            max_size_mb: retention.max_bytes.unwrap_or(0) >> 20,
        }
    }
}

impl StoreConfig {
    pub fn retention(&self) -> Retention {
        Retention {
            // 0: no age limit
            max_age: Some(Duration::from_secs(
                self.retention_days.saturating_mul(86_400),
            ))
            .filter(|age| !age.is_zero()),
            // 0: no size limit
            max_bytes: Some(self.max_size_mb << 20).filter(|&bytes| bytes > 0),
        }
    }
}

/// The Prometheus endpoint (`GET /metrics`); on by default, on loopback.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// The web view and JSON API over the store (`observer serve`), served by the daemon too;
/// off by default. Every request needs the token unless `no_auth` (loopback only).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// None: a random token, printed with the address at start.
    pub auth_token: Option<String>,
    pub no_auth: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 4319)),
            auth_token: None,
            no_auth: false,
        }
    }
}

/// Every span appended as a JSON line to a file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    pub path: PathBuf,
}

/// The output of `capture` and `replay`: every span, to standard output or a file.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    /// A file, or `-` for standard output.
    pub path: String,
    /// None: pretty on a terminal, jsonl otherwise.
    pub format: Option<OutputFormat>,
    /// No live view on stderr when spans go to a file (and, in `replay`, no summary).
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Jsonl,
    Pretty,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConfig {
    pub mode: ContentMode,
    /// Strings in span attributes past this many bytes are cut, with a marker.
    pub max_string_bytes: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CostConfig {
    /// A price table searched before the built-in one (the format of `observer/data/prices.toml`).
    pub prices: Option<PathBuf>,
}

/// What the command line sets; None or empty: not given, so the file (or the default) holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flags {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub store_enabled: Option<bool>,
    pub store_path: Option<PathBuf>,
    pub retention_days: Option<u64>,
    pub max_size_mb: Option<u64>,
    pub jsonl: Option<PathBuf>,
    pub otlp: OtlpFlags,
    pub content: ContentFlags,
    pub metrics_enabled: Option<bool>,
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in the configuration {}", path.display()))
    }

    /// Where `capture` and `replay` start: spans to `output` with their full message content,
    /// and no store or metrics unless a flag asks for them.
    pub fn with_output(output: OutputConfig) -> Config {
        let mut config = Config {
            output: Some(output),
            ..Config::default()
        };
        config.store.enabled = false;
        config.metrics.enabled = false;
        config.content.mode = ContentMode::Full;
        config
    }

    /// This configuration with the flags applied over it.
    pub fn overridden_by(mut self, flags: Flags) -> anyhow::Result<Config> {
        if !flags.pids.is_empty() {
            self.filters.pids = flags.pids;
        }
        if !flags.comms.is_empty() {
            self.filters.comms = flags.comms;
        }
        if let Some(path) = flags.store_path {
            self.store.path = path;
        }
        let store = &mut self.store;
        store.enabled = flags.store_enabled.unwrap_or(store.enabled);
        store.retention_days = flags.retention_days.unwrap_or(store.retention_days);
        store.max_size_mb = flags.max_size_mb.unwrap_or(store.max_size_mb);
        if let Some(path) = flags.jsonl {
            self.jsonl = Some(JsonlConfig { path });
        }
        self.otlp = flags.otlp.over(self.otlp);
        let content = &mut self.content;
        content.mode = flags.content.mode.unwrap_or(content.mode);
        content.max_string_bytes = flags.content.max_string_bytes.or(content.max_string_bytes);
        self.cost.prices = flags.content.prices.or(self.cost.prices);
        let metrics = &mut self.metrics;
        metrics.enabled = flags.metrics_enabled.unwrap_or(metrics.enabled);
        metrics.listen = flags.metrics_listen.unwrap_or(metrics.listen);
        Ok(self)
    }

    /// The LLM stage with its content handling and prices.
    pub fn llm_stage(&self) -> anyhow::Result<llm::LlmStage> {
        let content = llm::content::ContentOptions {
            mode: self.content.mode,
            max_string_bytes: self
                .content
                .max_string_bytes
                .unwrap_or(llm::content::DEFAULT_MAX_STRING_BYTES),
        };
        let user = self.cost.prices.as_deref().map(llm::cost::PriceTable::load);
        let prices = llm::cost::Prices {
            user: user.transpose()?,
        };
        Ok(llm::LlmStage { content, prices })
    }

    /// The OTLP export the file, the flags and the `OTEL_*` environment describe.
    pub fn otlp_export(&self) -> anyhow::Result<Option<OtlpExport>> {
        OtlpConfig::resolve(self.otlp.as_ref(), &Env::process())
    }

    /// Makes every configured sink, in one place.
    pub fn build_sinks(&self) -> anyhow::Result<Vec<Box<dyn Sink>>> {
        let mut sinks = match &self.output {
            Some(output) => output.build()?,
            None => Vec::new(),
        };
        // The daemon shows no spans itself: it says where they go instead.
        let daemon = self.output.is_none();
        let say = |line: String| {
            if daemon {
                eprintln!("{line}");
            }
        };
        if self.store.enabled {
            let mut store = self.store.build();
            if daemon {
                store = store.with_context(|| {
                    format!(
                        "opening the store {} (pass --store PATH for another place, or --no-store)",
                        self.store.path.display()
                    )
                });
            }
            sinks.push(Box::new(store?));
            say(format!("store: {}", self.store.path.display()));
        }
        let store = self.store.enabled.then_some(&self.store);
        if let Some(export) = self.otlp_export()?
            && let Some(otlp) = export.traces_sink(store)?
        {
            say(format!("otlp: {}", otlp.describe()));
            sinks.push(Box::new(otlp));
        }
        if let Some(jsonl) = &self.jsonl {
            sinks.push(Box::new(jsonl.build()?));
            say(format!("jsonl: appending to {}", jsonl.path.display()));
        }
        say(match self.content.mode {
            ContentMode::None => {
                "content: none (metadata only; mode = \"full\" or \"redacted\" under [content] \
                                  keeps message text)"
                    .to_owned()
            }
            mode => format!("content: {mode:?}").to_lowercase(),
        });
        if sinks.is_empty() {
            bail!("nothing to do: the store is off and no OTLP endpoint or jsonl file is set");
        }
        Ok(sinks)
    }
}

/// The flags for what spans keep of message text, and how calls are priced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContentFlags {
    pub mode: Option<ContentMode>,
    pub max_string_bytes: Option<usize>,
    pub prices: Option<PathBuf>,
}
