//! The metrics Prometheus serves, exported over OTLP too, for backends without a scraper:
//! every interval the exposition is read back into OTLP metrics (cumulative sums, gauges and
//! explicit-bucket histograms, since the observer started) and sent with the same transport
//! and settings as spans. Metrics are totals, so an export that fails is simply superseded by
//! the next one.
use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point::Value as Number,
    },
    resource::v1::Resource,
};
use serde_json::Value;

use super::{
    encode::{BaseResource, key_value, scope},
    retry::{Backoff, BackoffPolicy, Outcome},
    transport::{Request, Transport},
};
use crate::{config::OtlpExport, metrics::Metrics, store::now_unix_nanos};

/// Prometheus names of the GenAI conventions' metrics, with their OpenTelemetry names and units.
const CONVENTION_NAMES: [(&str, &str, &str); 3] = [
    (
        "gen_ai_client_token_usage",
        "gen_ai.client.token.usage",
        "{token}",
    ),
    (
        "gen_ai_client_operation_duration_seconds",
        "gen_ai.client.operation.duration",
        "s",
    ),
    (
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "gen_ai.client.operation.time_to_first_chunk",
        "s",
    ),
];

/// Prometheus label names of the conventions' attributes (other labels keep their names).
const CONVENTION_LABELS: [(&str, &str); 5] = [
    ("gen_ai_provider_name", "gen_ai.provider.name"),
    ("gen_ai_operation_name", "gen_ai.operation.name"),
    ("gen_ai_request_model", "gen_ai.request.model"),
    ("gen_ai_token_type", "gen_ai.token.type"),
    ("error_type", "error.type"),
];

/// Exports the metrics every interval on its own thread; a last time when dropped.
pub struct MetricsExporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    worker: Option<JoinHandle<()>>,
}

impl OtlpExport {
    /// Starts exporting `metrics`, when metrics export is configured.
    pub fn start_metrics(&self, metrics: Arc<Metrics>) -> anyhow::Result<Option<MetricsExporter>> {
        let Some(export) = &self.metrics else {
            return Ok(None);
        };
        let mut transport = Transport::new(&export.target)?;
        let resource = BaseResource::new(&self.resource);
        let interval = export.interval;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let worker = std::thread::Builder::new()
            .name("otlp-metrics".into())
            .spawn(move || {
                let start = now_unix_nanos();
                let mut refused = None;
                loop {
                    let stopping = wait(&stopped, interval);
                    let request = metrics_request(&metrics.render(), &resource, start);
                    let until = Instant::now() + if stopping { Duration::ZERO } else { interval };
                    send(&mut transport, request, until, &stopped, &mut refused);
                    if stopping {
                        return;
                    }
                }
            })
            .context("starting the OTLP metrics exporter's thread")?;
        eprintln!(
            "otlp: exporting metrics to {} every {} s",
            export.target.url,
            interval.as_secs()
        );
        Ok(Some(MetricsExporter {
            stop,
            worker: Some(worker),
        }))
    }
}

impl Drop for MetricsExporter {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.1.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Waits `timeout` or until told to stop; true when stopping.
fn wait(stop: &(Mutex<bool>, Condvar), timeout: Duration) -> bool {
    let guard = stop.0.lock().unwrap_or_else(PoisonError::into_inner);
    let (guard, _) = stop
        .1
        .wait_timeout_while(guard, timeout, |stopping| !*stopping)
        .unwrap_or_else(PoisonError::into_inner);
    *guard
}

/// Sends one export, retrying until `until`; each distinct refusal logged once.
fn send(
    transport: &mut Transport,
    request: ExportMetricsServiceRequest,
    until: Instant,
    stop: &(Mutex<bool>, Condvar),
    refused: &mut Option<String>,
) {
    let mut backoff = Backoff::new(BackoffPolicy::default());
    loop {
        let reason = match transport.send(Request::Metrics(request.clone())) {
            Outcome::Accepted { rejected: 0, .. } => return,
            Outcome::Accepted { rejected, message } => {
                format!("{rejected} data points rejected: {message}")
            }
            Outcome::Refused { reason } => reason,
            Outcome::Retry { reason, after } => {
                let wait_for = after.unwrap_or_else(|| backoff.next_wait());
                if Instant::now() + wait_for >= until || wait(stop, wait_for) {
                    log::debug!("otlp: metrics not exported this time: {reason}");
                    return;
                }
                continue;
            }
        };
        if refused.as_ref() != Some(&reason) {
            log::error!("otlp: {} refused the metrics: {reason}", transport.url());
            *refused = Some(reason);
        }
        return;
    }
}

/// One family of the Prometheus text exposition.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The families of an exposition (the observer's own: `# HELP`, `# TYPE`, then samples).
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_owned()).or_default().help = help.replace("\\n", "\n");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else if !line.starts_with('#')
            && let Some(sample) = parse_sample(line)
            && let Some(family) = family_of(&mut families, &sample.name)
        {
            family.samples.push(sample);
        }
    }
    families
}

/// The family a sample belongs to: its name, or its name less a histogram's suffix.
fn family_of<'a>(
    families: &'a mut BTreeMap<String, Family>,
    sample: &str,
) -> Option<&'a mut Family> {
    let name = ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| sample.strip_suffix(suffix))
        .find(|base| families.contains_key(*base))
        .unwrap_or(sample)
        .to_owned();
    families.get_mut(&name)
}

/// `name{label="value",…} value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.trim().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}')?)?),
        None => (head, Vec::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.trim_start_matches(',').to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// The exposition as one OTLP request, the values cumulative since `start` (ns).
fn metrics_request(
    exposition: &str,
    resource: &BaseResource,
    start: u64,
) -> ExportMetricsServiceRequest {
    let now = now_unix_nanos();
    let metrics = parse_exposition(exposition)
        .into_iter()
        .filter_map(|(name, family)| otlp_metric(&name, family, start, now))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.attributes().to_vec(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn otlp_metric(name: &str, family: Family, start: u64, now: u64) -> Option<Metric> {
    // The Prometheus text format names a counter's family with its `_total`.
    let base = match family.kind.as_str() {
        "counter" => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let (otel_name, unit) = CONVENTION_NAMES
        .iter()
        .find(|(prometheus, ..)| *prometheus == base)
        .map_or((base, ""), |(_, otel, unit)| (*otel, *unit));
    let number = |sample: &Sample| NumberDataPoint {
        attributes: attributes(&sample.labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(Number::AsDouble(sample.value)),
        ..Default::default()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match family.kind.as_str() {
        "counter" => Data::Sum(Sum {
            data_points: family.samples.iter().map(number).collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        "gauge" => Data::Gauge(Gauge {
            data_points: family.samples.iter().map(number).collect(),
        }),
        "histogram" => Data::Histogram(Histogram {
            data_points: histogram_points(name, &family.samples, start, now),
            aggregation_temporality: cumulative,
        }),
        _ => return None,
    };
    Some(Metric {
        name: otel_name.to_owned(),
        description: family.help,
        unit: unit.to_owned(),
        data: Some(data),
        ..Default::default()
    })
}

/// A histogram's `_bucket` (cumulative, by `le`), `_sum` and `_count` samples as data points
/// with per-bucket counts, one per label set.
fn histogram_points(
    name: &str,
    samples: &[Sample],
    start: u64,
    now: u64,
) -> Vec<HistogramDataPoint> {
    #[derive(Default)]
    struct Point {
        buckets: Vec<(f64, f64)>,
        sum: f64,
        count: f64,
    }
    let mut points: BTreeMap<Vec<(String, String)>, Point> = BTreeMap::new();
    for sample in samples {
        let mut labels = sample.labels.clone();
        let bound = labels
            .iter()
            .position(|(label, _)| label == "le")
            .map(|at| labels.remove(at).1);
        let point = points.entry(labels).or_default();
        match sample.name.strip_prefix(name) {
            Some("_bucket") => {
                let bound = match bound.as_deref() {
                    Some("+Inf") | None => f64::INFINITY,
                    Some(bound) => bound.parse().unwrap_or(f64::INFINITY),
                };
                point.buckets.push((bound, sample.value));
            }
            Some("_sum") => point.sum = sample.value,
            Some("_count") => point.count = sample.value,
            _ => {}
        }
    }
    points
        .into_iter()
        .map(|(labels, mut point)| {
            point.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut below = 0.0;
            let bucket_counts = point
                .buckets
                .iter()
                .map(|&(_, cumulative)| {
                    let count = (cumulative - below).max(0.0) as u64;
                    below = cumulative;
                    count
                })
                .collect();
            HistogramDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: point.count as u64,
                sum: Some(point.sum),
                bucket_counts,
                explicit_bounds: point
                    .buckets
                    .iter()
                    .map(|&(bound, _)| bound)
                    .filter(|bound| bound.is_finite())
                    .collect(),
                ..Default::default()
            }
        })
        .collect()
}

/// Labels as attributes, named as the conventions name them; empty ones left out.
fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(label, value)| {
            let key = CONVENTION_LABELS
                .iter()
                .find(|(prometheus, _)| prometheus == label)
                .map_or(label.as_str(), |(_, otel)| otel);
            key_value(key, &Value::from(value.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
