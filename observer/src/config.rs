//! The daemon's configuration file (`observer run --config PATH`), TOML; flags override it.
//! `deploy/observer.toml` shows every setting.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use serde::Deserialize;

use crate::store::{self, Retention};

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
            retention_days: retention.max_age.as_secs() / 86_400,
            max_size_mb: retention.max_bytes.unwrap_or(0) >> 20,
        }
    }
}

impl StoreConfig {
    pub fn retention(&self) -> Retention {
        Retention {
            max_age: Duration::from_secs(self.retention_days * 86_400),
            // 0: no size limit
            max_bytes: Some(self.max_size_mb << 20).filter(|&bytes| bytes > 0),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    pub endpoint: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub service_name: Option<String>,
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

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    pub path: PathBuf,
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

/// How much prompt and completion text spans keep (see `llm::content`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    /// Messages, system instructions and tool definitions as sent and received.
    #[default]
    Full,
    /// Each text, tool argument and tool result replaced by its length and a hash.
    Redacted,
    /// Metadata only: no messages, system instructions or tool definitions.
    None,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in the configuration {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observer.toml");
        let config = Config::load(&example).unwrap();
        assert_eq!(
            config.store.retention().max_age,
            Duration::from_secs(7 * 86_400)
        );
        assert!(config.otlp.is_some());
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert!(config.store.enabled);
        assert_eq!(config.store.retention(), Retention::default());
    }

    #[test]
    fn reads_each_section_and_refuses_unknown_keys() {
        let config: Config = toml::from_str(
            r#"
            filters = { comms = ["python3"] }
            store = { path = "/tmp/x.db", retention_days = 1, max_size_mb = 0 }
            otlp = { endpoint = "http://c:4318", headers = { authorization = "Bearer t" } }
            jsonl = { path = "/tmp/spans.jsonl" }
            "#,
        )
        .unwrap();
        assert_eq!(config.filters.comms, ["python3"]);
        assert_eq!(config.store.retention().max_bytes, None);
        assert_eq!(config.otlp.unwrap().headers["authorization"], "Bearer t");
        assert!(toml::from_str::<Config>("[store]\nretention = 3").is_err());
        assert!(toml::from_str::<Config>("[content]\nmode = \"everything\"").is_err());
        let config: Config = toml::from_str("[content]\nmode = \"redacted\"").unwrap();
        assert_eq!(config.content.mode, ContentMode::Redacted);
    }
}
