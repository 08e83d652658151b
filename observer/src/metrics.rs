//! Prometheus metrics at `GET /metrics`: the OpenTelemetry GenAI client metrics, computed from
//! the calls' spans, and the observer's own health (what it read, lost, truncated, failed to
//! parse, attached to, and holds queued).
use std::sync::Arc;

use axum::{Router, extract::State, http::header, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    capture::CaptureStats,
    health::{PipelineTotals, QueueHealth},
    sink::Sink,
    span::Span,
};

/// The GenAI conventions' bucket boundaries for token counts (powers of 4) and durations (s).
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    gen_ai_provider_name: String,
    gen_ai_operation_name: String,
    gen_ai_request_model: String,
    /// Empty for a call that succeeded.
    error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    gen_ai_provider_name: String,
    gen_ai_operation_name: String,
    gen_ai_request_model: String,
    /// "input" or "output".
    gen_ai_token_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabels {
    sink: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    counter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    token_usage: HistogramFamily<TokenLabels>,
    duration: HistogramFamily<CallLabels>,
    time_to_first_chunk: HistogramFamily<CallLabels>,
    calls: Family<CallLabels, Counter>,
    events: Counter,
    bytes: Counter,
    events_lost: Counter,
    calls_truncated: Counter,
    parse_failures: Counter,
    spans: Counter,
    attached_targets: Gauge,
    queue_depth: Family<SinkLabels, Gauge>,
    spans_dropped: Family<SinkLabels, Counter>,
    spans_exported: Family<ExportLabels, Counter>,
    probe_hits: Counter,
    not_copied: Family<ReasonLabels, Counter>,
    agent_processes_not_followed: Family<ReasonLabels, Counter>,
    probes: Family<ScopeLabels, Gauge>,
    followed_total: Counter,
    stopped_following: Family<ReasonLabels, Counter>,
    given_up: Family<ReasonLabels, Counter>,
    http: Family<CounterLabels, Counter>,
    reassembly: Family<CounterLabels, Counter>,
    bytes_not_captured: Family<ReasonLabels, Counter>,
    followed_again: Counter,
    analyses: Family<CounterLabels, Counter>,
    holds: Family<ReasonLabels, Counter>,
    hold_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    hold_max_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let metrics = Metrics {
            registry: Registry::default(),
            token_usage: Family::new_with_constructor(token_histogram),
            duration: Family::new_with_constructor(duration_histogram),
            time_to_first_chunk: Family::new_with_constructor(duration_histogram),
            calls: Family::default(),
            events: Counter::default(),
            bytes: Counter::default(),
            events_lost: Counter::default(),
            calls_truncated: Counter::default(),
            parse_failures: Counter::default(),
            spans: Counter::default(),
            attached_targets: Gauge::default(),
            queue_depth: Family::default(),
            spans_dropped: Family::default(),
            spans_exported: Family::default(),
            probe_hits: Counter::default(),
            not_copied: Family::default(),
            agent_processes_not_followed: Family::default(),
            probes: Family::default(),
            followed_total: Counter::default(),
            stopped_following: Family::default(),
            given_up: Family::default(),
            http: Family::default(),
            reassembly: Family::default(),
            bytes_not_captured: Family::default(),
            followed_again: Counter::default(),
            analyses: Family::default(),
            holds: Family::default(),
            hold_seconds: Counter::default(),
            hold_max_seconds: Gauge::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per LLM call, by token type (input, output)",
            metrics.token_usage.clone(),
        );
        registry.register(
            "gen_ai_client_operation_duration_seconds",
            "Duration of LLM calls, request start to response end",
            metrics.duration.clone(),
        );
        registry.register(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time from the end of the request to the first streamed output",
            metrics.time_to_first_chunk.clone(),
        );
        registry.register(
            "gen_ai_client_calls",
            "LLM calls seen; error_type is set on failed ones",
            metrics.calls.clone(),
        );
        registry.register(
            "observer_events",
            "Capture events read from the kernel (or a recording)",
            metrics.events.clone(),
        );
        registry.register(
            "observer_bytes",
            "Plaintext bytes captured from traced processes",
            metrics.bytes.clone(),
        );
        registry.register(
            "observer_events_lost",
            "Events dropped because the kernel ring buffer was full",
            metrics.events_lost.clone(),
        );
        registry.register(
            "observer_calls_truncated",
            "TLS reads or writes larger than the per-call capture cap",
            metrics.calls_truncated.clone(),
        );
        registry.register(
            "observer_parse_failures",
            "HTTP messages that could not be parsed",
            metrics.parse_failures.clone(),
        );
        registry.register(
            "observer_spans",
            "Spans written: calls, and the agent runs and tool executions inferred around them",
            metrics.spans.clone(),
        );
        registry.register(
            "observer_attached_targets",
            "Processes the probes follow now",
            metrics.attached_targets.clone(),
        );
        registry.register(
            "observer_processes_followed",
            "Processes the probes started following",
            metrics.followed_total.clone(),
        );
        registry.register(
            "observer_processes_unfollowed",
            "Processes the probes stopped following, by reason (costly: over budget without an LLM call)",
            metrics.stopped_following.clone(),
        );
        registry.register(
            "observer_given_up",
            "What the observer saw but could not turn into spans, or could not see, by reason (all zero: nothing lost)",
            metrics.given_up.clone(),
        );
        registry.register(
            "observer_http_events",
            "The HTTP stage's work and what it skipped, by counter (exchanges, http2_streams, responses_not_followed, ...)",
            metrics.http.clone(),
        );
        registry.register(
            "observer_reassembly_events",
            "The reassembly stage's work, by counter (chunks, reordered, duplicates, gaps, ...)",
            metrics.reassembly.clone(),
        );
        registry.register(
            "observer_bytes_not_captured",
            "Plaintext bytes the probes saw but could not deliver, by reason (ring_buffer_full, call_truncated)",
            metrics.bytes_not_captured.clone(),
        );
        registry.register(
            "observer_processes_followed_again",
            "Processes followed again after being dropped (a new peer, a TLS library opened)",
            metrics.followed_again.clone(),
        );
        registry.register(
            "observer_file_analyses",
            "Executables and libraries looked at, by counter: read (analysed), cached, over_bound (refused: too large or too slow to analyse), waited (requests that waited for an analysis off the follower's thread), skipped (served without it: their user's queue was full)",
            metrics.analyses.clone(),
        );
        registry.register(
            "observer_probes",
            "Probe sites switched on, by scope: per_process (summed over the processes they are on for), host_wide",
            metrics.probes.clone(),
        );
        registry.register(
            "observer_probe_hits",
            "Probed calls in followed processes",
            metrics.probe_hits.clone(),
        );
        registry.register(
            "observer_calls_not_copied",
            "Probed calls whose bytes were judged in the kernel and not copied, by reason",
            metrics.not_copied.clone(),
        );
        registry.register(
            "observer_agent_processes_not_followed",
            "Processes (or threads) agents started that were not followed for commands, by reason (depth: past the depth bound, full: the kernel's map was full)",
            metrics.agent_processes_not_followed.clone(),
        );
        registry.register(
            "observer_exec_holds",
            "Execs and TLS library opens held until probes were on, by who let them go (observer, bound)",
            metrics.holds.clone(),
        );
        registry.register(
            "observer_exec_hold_seconds",
            "Time processes spent held at exec or at a TLS library's open",
            metrics.hold_seconds.clone(),
        );
        registry.register(
            "observer_exec_hold_max_seconds",
            "The longest hold so far",
            metrics.hold_max_seconds.clone(),
        );
        registry.register(
            "observer_sink_queue_depth",
            "Spans waiting in a sink's queue",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "observer_sink_dropped_spans",
            "Spans a sink dropped because its queue was full",
            metrics.spans_dropped.clone(),
        );
        registry.register(
            "observer_export_spans",
            "An exporter's spans by outcome: exported, rejected (by the receiver), expired (retries ran out), pruned (deleted by the store's retention before export)",
            metrics.spans_exported.clone(),
        );
        Arc::new(Metrics {
            registry,
            ..metrics
        })
    }

    /// Counts one span: calls feed the GenAI metrics, inferred spans only the span total.
    pub fn record_span(&self, span: &Span) {
        if !span.is_call() {
            return;
        }
        let gen_ai = &span.gen_ai;
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let call = CallLabels {
            gen_ai_provider_name: text(&gen_ai.provider),
            gen_ai_operation_name: text(&gen_ai.operation),
            gen_ai_request_model: text(&gen_ai.request_model),
            error_type: text(&gen_ai.error_type),
        };
        self.calls.get_or_create(&call).inc();
        self.duration
            .get_or_create(&call)
            .observe(span.duration_ns() as f64 / 1e9);
        if let Some(seconds) = gen_ai.time_to_first_chunk {
            self.time_to_first_chunk
                .get_or_create(&call)
                .observe(seconds);
        }
        for (kind, tokens) in [
            ("input", gen_ai.input_tokens),
            ("output", gen_ai.output_tokens),
        ] {
            if let Some(tokens) = tokens {
                let labels = TokenLabels {
                    gen_ai_provider_name: call.gen_ai_provider_name.clone(),
                    gen_ai_operation_name: call.gen_ai_operation_name.clone(),
                    gen_ai_request_model: call.gen_ai_request_model.clone(),
                    gen_ai_token_type: kind.to_owned(),
                };
                self.token_usage
                    .get_or_create(&labels)
                    .observe(tokens as f64);
            }
        }
    }

    pub fn update_pipeline(&self, totals: PipelineTotals, queues: &[QueueHealth]) {
        set_total(&self.events, totals.events);
        set_total(&self.bytes, totals.bytes);
        set_total(&self.parse_failures, totals.parse_failures);
        set_total(&self.spans, totals.spans);
        for given_up in totals.given_up {
            set_total(
                &self.given_up.get_or_create(&ReasonLabels {
                    reason: given_up.reason,
                }),
                given_up.count,
            );
        }
        let counted = [
            (&self.http, &totals.http.counters()[..]),
            (&self.reassembly, &totals.reassembly.counters()[..]),
        ];
        for (family, counters) in counted {
            for &(counter, total) in counters {
                set_total(&family.get_or_create(&CounterLabels { counter }), total);
            }
        }
        for queue in queues {
            let labels = SinkLabels {
                sink: queue.name.to_owned(),
            };
            self.queue_depth
                .get_or_create(&labels)
                .set(i64::try_from(queue.depth).unwrap_or(i64::MAX));
            set_total(&self.spans_dropped.get_or_create(&labels), queue.dropped);
            for (outcome, _, total) in queue.export.iter().flat_map(|e| e.outcomes()) {
                let labels = ExportLabels {
                    sink: queue.name.to_owned(),
                    outcome,
                };
                set_total(&self.spans_exported.get_or_create(&labels), total);
            }
        }
    }

    pub fn update_capture(&self, stats: &CaptureStats) {
        let (kernel, follow) = (&stats.kernel, &stats.follow);
        set_total(&self.events_lost, kernel.events_lost);
        set_total(&self.calls_truncated, kernel.calls_truncated);
        set_total(&self.probe_hits, kernel.probe_hits);
        for (reason, total) in [
            ("ring_buffer_full", kernel.bytes_lost),
            ("call_truncated", kernel.bytes_truncated),
        ] {
            set_total(
                &self
                    .bytes_not_captured
                    .get_or_create(&ReasonLabels { reason }),
                total,
            );
        }
        for (reason, total) in [
            ("connection_not_followed", kernel.skipped_connection),
            ("response_not_llm", kernel.skipped_response),
            ("not_http", kernel.skipped_not_http),
            ("rustls_server_side", kernel.rustls_server_side),
            ("rustls_session_unknown", kernel.rustls_session_unknown),
        ] {
            set_total(
                &self.not_copied.get_or_create(&ReasonLabels { reason }),
                total,
            );
        }
        for (reason, total) in [("depth", kernel.tree_depth_cut), ("full", kernel.tree_full)] {
            set_total(
                &self
                    .agent_processes_not_followed
                    .get_or_create(&ReasonLabels { reason }),
                total,
            );
        }
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.attached_targets.set(gauge(follow.followed_now));
        for (scope, count) in [
            ("per_process", follow.process_probes),
            ("host_wide", follow.host_wide_probes),
        ] {
            self.probes
                .get_or_create(&ScopeLabels { scope })
                .set(gauge(count));
        }
        set_total(&self.followed_total, follow.followed_total);
        set_total(
            &self
                .stopped_following
                .get_or_create(&ReasonLabels { reason: "costly" }),
            follow.dropped_costly,
        );
        set_total(&self.followed_again, follow.readmitted);
        for (counter, total) in [
            ("read", follow.analyses.read),
            ("cached", follow.analyses.cached),
            ("over_bound", follow.analyses.over_bound),
            ("waited", follow.analysis_waits),
            ("skipped", follow.analyses_skipped),
        ] {
            set_total(
                &self.analyses.get_or_create(&CounterLabels { counter }),
                total,
            );
        }
        if let Some(gate) = &stats.gate {
            let released_by_observer = gate.holds.saturating_sub(gate.released_by_gate);
            for (reason, total) in [
                ("observer", released_by_observer),
                ("bound", gate.released_by_gate),
            ] {
                set_total(&self.holds.get_or_create(&ReasonLabels { reason }), total);
            }
            let seconds = gate.total_hold_time.as_secs_f64();
            let current = self.hold_seconds.get();
            if seconds > current {
                self.hold_seconds.inc_by(seconds - current);
            }
            self.hold_max_seconds.set(gate.max_hold_time.as_secs_f64());
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// Brings a counter up to a total counted elsewhere (counters only go up).
fn set_total(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// The metrics hear every span and the pipeline's health as a sink does.
impl Sink for Arc<Metrics> {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        self.record_span(span);
        Ok(())
    }

    fn health(&mut self, totals: &PipelineTotals, queues: &[QueueHealth]) {
        self.update_pipeline(*totals, queues);
    }
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl axum::response::IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::span::{GenAi, SpanKind};

    fn call(extra: Value) -> Span {
        let mut attributes = json!({
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.response.time_to_first_chunk": 0.25,
        })
        .as_object()
        .cloned()
        .unwrap();
        attributes.extend(extra.as_object().cloned().unwrap_or_default());
        Span {
            trace_id: "1".repeat(32),
            span_id: "2".repeat(16),
            parent_span_id: None,
            name: "chat gpt-4o".into(),
            kind: SpanKind::Client,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 2_500_000_000,
            gen_ai: GenAi::take_from(&mut attributes),
            attributes,
            links: Vec::new(),
        }
    }

    /// The value of one sample line, e.g. `observer_events_total 12`.
    fn sample(text: &str, line_start: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn genai_metrics_from_calls() {
        let metrics = Metrics::new();
        metrics.record_span(&call(json!({})));
        metrics.record_span(&call(
            json!({"error.type": "429", "gen_ai.usage.output_tokens": null}),
        ));
        let mut root = call(json!({"gen_ai.operation.name": "invoke_agent"}));
        root.kind = SpanKind::Internal;
        metrics.record_span(&root);
        let text = metrics.render();
        let ok = r#"gen_ai_provider_name="openai",gen_ai_operation_name="chat",gen_ai_request_model="gpt-4o",error_type="""#;
        assert_eq!(
            sample(&text, &format!("gen_ai_client_calls_total{{{ok}}}")),
            1.0
        );
        let failed = ok.replace(r#"error_type="""#, r#"error_type="429""#);
        assert_eq!(
            sample(&text, &format!("gen_ai_client_calls_total{{{failed}}}")),
            1.0
        );
        assert!(
            !text.contains("invoke_agent"),
            "inferred spans are not calls"
        );
        let tokens = r#"gen_ai_provider_name="openai",gen_ai_operation_name="chat",gen_ai_request_model="gpt-4o",gen_ai_token_type"#;
        assert_eq!(
            sample(
                &text,
                &format!(r#"gen_ai_client_token_usage_sum{{{tokens}="input"}}"#)
            ),
            200.0
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"gen_ai_client_token_usage_count{{{tokens}="output"}}"#)
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("gen_ai_client_operation_duration_seconds_sum{{{ok}}}")
            ),
            1.5
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"gen_ai_client_operation_duration_seconds_bucket{{{ok},le="1.28"}}"#)
            ),
            0.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("gen_ai_client_operation_time_to_first_chunk_seconds_sum{{{ok}}}")
            ),
            0.25
        );
    }

    #[test]
    fn health_totals_only_go_up() {
        let metrics = Metrics::new();
        let queue = |depth, dropped| QueueHealth {
            name: "otlp",
            depth,
            dropped,
            export: Some(crate::health::ExportHealth {
                exported: 40,
                pruned: dropped,
                ..Default::default()
            }),
        };
        let http = crate::http::HttpStats {
            joined_mid_stream: 2,
            responses_not_followed: 6,
            ..Default::default()
        };
        let reassembly = crate::reassemble::ReassemblyStats {
            reordered: 9,
            ..Default::default()
        };
        let totals = PipelineTotals {
            events: 10,
            bytes: 4096,
            parse_failures: 1,
            spans: 3,
            given_up: crate::health::given_up(&http, &Default::default(), &Default::default()),
            http,
            reassembly,
        };
        metrics.update_pipeline(totals, &[queue(7, 2)]);
        metrics.update_pipeline(
            PipelineTotals {
                events: 12,
                ..totals
            },
            &[queue(0, 2)],
        );
        let mut stats = CaptureStats::default();
        stats.kernel.events_lost = 5;
        stats.kernel.calls_truncated = 1;
        stats.kernel.bytes_truncated = 300;
        stats.kernel.skipped_not_http = 4;
        stats.follow.followed_now = 3;
        stats.follow.analyses.over_bound = 2;
        stats.follow.analyses_skipped = 7;
        metrics.update_capture(&stats);
        let text = metrics.render();
        assert_eq!(sample(&text, "observer_events_total "), 12.0);
        assert_eq!(sample(&text, "observer_bytes_total "), 4096.0);
        assert_eq!(sample(&text, "observer_parse_failures_total "), 1.0);
        assert_eq!(sample(&text, "observer_events_lost_total "), 5.0);
        assert_eq!(sample(&text, "observer_calls_truncated_total "), 1.0);
        assert_eq!(sample(&text, "observer_attached_targets "), 3.0);
        let counters = [
            (
                r#"observer_http_events_total{counter="responses_not_followed"}"#,
                6.0,
            ),
            (
                r#"observer_reassembly_events_total{counter="reordered"}"#,
                9.0,
            ),
            (
                r#"observer_bytes_not_captured_total{reason="call_truncated"}"#,
                300.0,
            ),
            (r#"observer_file_analyses_total{counter="over_bound"}"#, 2.0),
            (r#"observer_file_analyses_total{counter="skipped"}"#, 7.0),
        ];
        for (line_start, value) in counters {
            assert_eq!(sample(&text, line_start), value, "{line_start}");
        }
        assert_eq!(
            sample(
                &text,
                r#"observer_given_up_total{reason="joined_mid_stream"}"#
            ),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                r#"observer_given_up_total{reason="ring_buffer_full"}"#
            ),
            0.0
        );
        assert_eq!(
            sample(
                &text,
                r#"observer_calls_not_copied_total{reason="not_http"}"#
            ),
            4.0
        );
        assert_eq!(
            sample(&text, r#"observer_sink_queue_depth{sink="otlp"}"#),
            0.0
        );
        assert_eq!(
            sample(&text, r#"observer_sink_dropped_spans_total{sink="otlp"}"#),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                r#"observer_export_spans_total{sink="otlp",outcome="exported"}"#
            ),
            40.0
        );
        assert_eq!(
            sample(
                &text,
                r#"observer_export_spans_total{sink="otlp",outcome="pruned"}"#
            ),
            2.0
        );
    }
}
