//! OTLP export settings: the `[otlp]` section, its flags, and the standard `OTEL_*` environment
//! an operator sets for every OpenTelemetry component. Flags win over the file, the file over
//! the environment; each signal (traces, metrics) is resolved into one [`Target`].
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Spans (and, when asked, metrics) exported over OTLP. Every field is optional: what neither
/// the flags nor the file set comes from the `OTEL_*` environment, else the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The receiver's base URL (`http://collector:4318`): `/v1/traces` and `/v1/metrics` are
    /// appended for HTTP (unless the path already ends with `/v1/traces`); for gRPC, the target
    /// (`http://collector:4317`).
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    /// Sent with every request, e.g. `authorization: Bearer …`.
    pub headers: BTreeMap<String, String>,
    pub compression: Option<Compression>,
    /// How long one export request may take.
    pub timeout_ms: Option<u64>,
    /// PEM file of the CA that signs the receiver's certificate (instead of the public roots).
    pub certificate: Option<PathBuf>,
    /// PEM files of the certificate and key the observer presents to the receiver (mTLS).
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The `service.name` resource attribute; None: `observer`.
    pub service_name: Option<String>,
    /// More resource attributes (`deployment.environment`, `host.name`, …).
    pub resource_attributes: BTreeMap<String, String>,
    /// Without the store: how long a batch is retried before it is dropped (counted).
    pub retry_max_elapsed_secs: Option<u64>,
    /// Without the store: spans, and megabytes of them, waiting to be sent at most.
    pub queue_max_spans: Option<usize>,
    pub queue_max_mb: Option<u64>,
    /// Also export the metrics Prometheus serves (GenAI client metrics, the observer's health).
    pub metrics: Option<bool>,
    pub metrics_interval_secs: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    #[serde(rename = "grpc")]
    #[value(name = "grpc")]
    Grpc,
    #[default]
    #[serde(rename = "http/protobuf")]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// The OTLP flags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OtlpFlags {
    pub endpoint: Option<String>,
    /// Added to the file's headers, replacing those of the same name.
    pub headers: Vec<(String, String)>,
    pub service_name: Option<String>,
    pub protocol: Option<Protocol>,
    pub metrics: bool,
}

impl OtlpFlags {
    fn given(&self) -> bool {
        self != &OtlpFlags::default()
    }

    /// The flags over the file's section (None: neither says anything of OTLP).
    pub(super) fn over(self, configured: Option<OtlpConfig>) -> Option<OtlpConfig> {
        if !self.given() {
            return configured;
        }
        let mut otlp = configured.unwrap_or_default();
        otlp.endpoint = self.endpoint.or(otlp.endpoint);
        otlp.headers.extend(self.headers);
        otlp.service_name = self.service_name.or(otlp.service_name);
        otlp.protocol = self.protocol.or(otlp.protocol);
        if self.metrics {
            otlp.metrics = Some(true);
        }
        Some(otlp)
    }
}

/// Where and how one signal goes, every setting resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub protocol: Protocol,
    /// The URL posted to (HTTP), or the gRPC target.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub compression: Compression,
    pub timeout: Duration,
    pub tls: TlsFiles,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// What OTLP export does, every setting resolved from the flags, the file and the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpExport {
    /// None: no endpoint for traces anywhere.
    pub traces: Option<Target>,
    pub metrics: Option<MetricsExport>,
    /// Resource attributes for everything exported (`service.name` always among them).
    pub resource: BTreeMap<String, String>,
    /// The in-memory queue's bounds (without the store).
    pub queue: QueueLimits,
    pub retry_max_elapsed: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricsExport {
    pub target: Target,
    pub interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub spans: usize,
    pub bytes: usize,
}

const DEFAULT_SERVICE_NAME: &str = "observer";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(300);
const DEFAULT_QUEUE_SPANS: usize = 10_000;
const DEFAULT_QUEUE_MB: u64 = 64;
const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn env_infix(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// The environment as the resolution reads it: empty values count as unset, as the
/// OpenTelemetry specification asks.
pub struct Env<'a>(pub &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The process's environment.
    pub fn process() -> Env<'static> {
        Env(&|name| std::env::var(name).ok())
    }

    fn get(&self, name: &str) -> Option<(String, String)> {
        (self.0)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .map(|value| (name.to_owned(), value))
    }

    /// `OTEL_EXPORTER_OTLP_{SIGNAL}_{KEY}`, else `OTEL_EXPORTER_OTLP_{KEY}`: (variable, value).
    fn exporter(&self, signal: Signal, key: &str) -> Option<(String, String)> {
        self.get(&format!("OTEL_EXPORTER_OTLP_{}_{key}", signal.env_infix()))
            .or_else(|| self.get(&format!("OTEL_EXPORTER_OTLP_{key}")))
    }
}

impl OtlpConfig {
    /// The export these settings (None: no `[otlp]` section and no OTLP flag) describe with
    /// `env` filling what they leave out; None when no endpoint is set anywhere.
    pub fn resolve(
        configured: Option<&OtlpConfig>,
        env: &Env,
    ) -> anyhow::Result<Option<OtlpExport>> {
        let otlp = configured.cloned().unwrap_or_default();
        let traces = otlp.target(Signal::Traces, env)?;
        let metrics_asked = match otlp.metrics {
            Some(asked) => asked,
            None => {
                env.get("OTEL_METRICS_EXPORTER")
                    .is_some_and(|(_, v)| v.split(',').any(|e| e.trim() == "otlp"))
                    || env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some()
            }
        };
        let metrics = if metrics_asked {
            let interval = match (
                otlp.metrics_interval_secs,
                env.get("OTEL_METRIC_EXPORT_INTERVAL"),
            ) {
                (Some(secs), _) => Duration::from_secs(secs),
                (None, Some((name, value))) => Duration::from_millis(parse_number(&name, &value)?),
                (None, None) => DEFAULT_METRICS_INTERVAL,
            };
            otlp.target(Signal::Metrics, env)?
                .map(|target| MetricsExport {
                    target,
                    interval: interval.max(Duration::from_secs(1)),
                })
        } else {
            None
        };
        match (traces.is_some() || metrics.is_some(), configured) {
            (true, _) => {}
            (false, None) => return Ok(None),
            (false, Some(_)) => bail!(
                "OTLP export is configured but no endpoint is set: pass --otlp-endpoint URL, set \
                 endpoint in [otlp], or set OTEL_EXPORTER_OTLP_ENDPOINT"
            ),
        }
        Ok(Some(OtlpExport {
            traces,
            metrics,
            resource: otlp.resource(env)?,
            queue: QueueLimits {
                spans: otlp.queue_max_spans.unwrap_or(DEFAULT_QUEUE_SPANS).max(1),
                bytes: (otlp.queue_max_mb.unwrap_or(DEFAULT_QUEUE_MB).max(1) << 20) as usize,
            },
            retry_max_elapsed: otlp
                .retry_max_elapsed_secs
                .map_or(DEFAULT_RETRY_MAX_ELAPSED, Duration::from_secs),
        }))
    }

    fn target(&self, signal: Signal, env: &Env) -> anyhow::Result<Option<Target>> {
        let protocol = match (self.protocol, env.exporter(signal, "PROTOCOL")) {
            (Some(protocol), _) => protocol,
            (None, Some((name, value))) => match value.as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                _ => bail!("{name}={value} is not supported: use grpc or http/protobuf"),
            },
            (None, None) => Protocol::default(),
        };
        let signal_endpoint = format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.env_infix());
        // The file's endpoint and the general variable are bases; the signal's variable is
        // used as it is.
        let url = match (&self.endpoint, env.get(&signal_endpoint)) {
            (Some(base), _) => signal_url(protocol, signal, base),
            (None, Some((_, url))) => url,
            (None, None) => match env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some((_, base)) => signal_url(protocol, signal, &base),
                None => return Ok(None),
            },
        };
        let url = if protocol == Protocol::Grpc && !url.contains("://") {
            // A bare gRPC target: TLS unless the environment says the receiver is insecure.
            let insecure = match env.exporter(signal, "INSECURE") {
                Some((name, value)) => parse_bool(&name, &value)?,
                None => false,
            };
            format!("{}://{url}", if insecure { "http" } else { "https" })
        } else {
            url
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!("the OTLP endpoint {url} is not an http:// or https:// URL");
        }
        let mut headers = match env.exporter(signal, "HEADERS") {
            Some((name, value)) => parse_pairs(&name, &value)?,
            None => BTreeMap::new(),
        };
        headers.extend(self.headers.clone());
        let compression = match (self.compression, env.exporter(signal, "COMPRESSION")) {
            (Some(compression), _) => compression,
            (None, Some((name, value))) => match value.as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => bail!("{name}={value} is not supported: use gzip or none"),
            },
            (None, None) => Compression::default(),
        };
        let timeout = match (self.timeout_ms, env.exporter(signal, "TIMEOUT")) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some((name, value))) => Duration::from_millis(parse_number(&name, &value)?),
            (None, None) => DEFAULT_TIMEOUT,
        };
        let file = |configured: &Option<PathBuf>, key: &str| {
            configured
                .clone()
                .or_else(|| env.exporter(signal, key).map(|(_, path)| path.into()))
        };
        let tls = TlsFiles {
            ca: file(&self.certificate, "CERTIFICATE"),
            client_certificate: file(&self.client_certificate, "CLIENT_CERTIFICATE"),
            client_key: file(&self.client_key, "CLIENT_KEY"),
        };
        if tls.client_certificate.is_some() != tls.client_key.is_some() {
            bail!("a client certificate for OTLP needs its key, and a key its certificate");
        }
        Ok(Some(Target {
            protocol,
            url,
            headers,
            compression,
            timeout: timeout.max(Duration::from_millis(1)),
            tls,
        }))
    }

    /// OTEL_RESOURCE_ATTRIBUTES, under the file's attributes, under the service name (the flag
    /// or the file's, else OTEL_SERVICE_NAME, else the attributes', else `observer`).
    fn resource(&self, env: &Env) -> anyhow::Result<BTreeMap<String, String>> {
        let mut resource = match env.get("OTEL_RESOURCE_ATTRIBUTES") {
            Some((name, value)) => parse_pairs(&name, &value)?,
            None => BTreeMap::new(),
        };
        resource.extend(self.resource_attributes.clone());
        let service_name = self
            .service_name
            .clone()
            .or_else(|| env.get("OTEL_SERVICE_NAME").map(|(_, name)| name))
            .or_else(|| resource.get("service.name").cloned())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        resource.insert("service.name".to_owned(), service_name);
        Ok(resource)
    }
}

/// A base endpoint made the signal's URL: for HTTP the signal's path appended (a path already
/// ending with `/v1/traces` is taken as the traces URL), for gRPC the target as it is.
fn signal_url(protocol: Protocol, signal: Signal, base: &str) -> String {
    if protocol == Protocol::Grpc {
        return base.to_owned();
    }
    let base = base.trim_end_matches('/');
    let base = base
        .strip_suffix(Signal::Traces.http_path())
        .unwrap_or(base);
    format!("{base}{}", signal.http_path())
}

/// `key1=value1,key2=value2` (the W3C baggage form without properties), values
/// percent-decoded, as OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES have them.
fn parse_pairs(name: &str, text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut pairs = BTreeMap::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((key, value)) = item.split_once('=') else {
            bail!("{name}: `{item}` is not key=value (the form is key1=value1,key2=value2)");
        };
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text.trim())
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .with_context(|| format!("{name}: `{item}` is not UTF-8 once percent-decoded"))
        };
        let key = decode(key)?;
        if key.is_empty() {
            bail!("{name}: `{item}` has no key");
        }
        pairs.insert(key, decode(value)?);
    }
    Ok(pairs)
}

fn parse_number(name: &str, value: &str) -> anyhow::Result<u64> {
    value
        .parse()
        .with_context(|| format!("{name}={value} is not a whole number of milliseconds"))
}

fn parse_bool(name: &str, value: &str) -> anyhow::Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("{name}={value} is neither true nor false"),
    }
}

#[cfg(test)]
mod tests;
