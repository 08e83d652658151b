//! The end-of-session summary: calls, tokens by model, errors, latency percentiles. Bounded
//! for a daemon's lifetime: latencies in a histogram, models past a cap counted together.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use hdrhistogram::Histogram;

use super::{Sink, pretty::format_seconds};
use crate::{
    health::{PipelineTotals, QueueHealth, Report},
    llm::attr,
    span::Span,
};

/// Models listed by name; calls of further models are counted under one line.
const MAX_MODELS: usize = 256;
const OTHER_MODELS: &str = "(other models)";
/// Latencies are kept in microseconds, from 1 µs to a day, to three significant digits.
const MAX_LATENCY_US: u64 = 86_400_000_000;

pub struct Summary {
    calls: u64,
    errors: u64,
    incomplete: u64,
    latency_us: Histogram<u64>,
    by_model: BTreeMap<String, ModelTotals>,
    /// The sinks' queues, as last heard.
    queues: Vec<QueueHealth>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            calls: 0,
            errors: 0,
            incomplete: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant bounds are valid"),
            by_model: BTreeMap::new(),
            queues: Vec::new(),
        }
    }
}

#[derive(Default)]
struct ModelTotals {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Summary {
    pub fn record(&mut self, span: &Span) {
        self.calls += 1;
        let gen_ai = &span.gen_ai;
        if gen_ai.error_type.is_some() {
            self.errors += 1;
        }
        // Cut short before the call's end (a stream ended by its last event is whole even if
        // the connection closed before the HTTP body's end).
        if span.attribute(attr::OBSERVER_EXCHANGE_END).is_some() && gen_ai.error_type.is_some() {
            self.incomplete += 1;
        }
        let micros = (span.duration_ns() / 1_000).clamp(1, MAX_LATENCY_US);
        self.latency_us.saturating_record(micros);
        let model = gen_ai.model().unwrap_or("(unknown model)");
        let model = if self.by_model.contains_key(model) || self.by_model.len() < MAX_MODELS {
            model
        } else {
            OTHER_MODELS
        };
        let totals = self.by_model.entry(model.to_string()).or_default();
        totals.calls += 1;
        totals.input_tokens += gen_ai.input_tokens.unwrap_or(0);
        totals.output_tokens += gen_ai.output_tokens.unwrap_or(0);
    }

    /// The calls, then the observer's own health from `report`: the traffic it followed and
    /// what it gave up on, by reason.
    pub fn render(&self, report: &Report) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "── observer summary ──────────────────────────────────────"
        );
        let _ = writeln!(
            out,
            " calls {}   errors {}   incomplete {}",
            self.calls, self.errors, self.incomplete
        );
        if !self.latency_us.is_empty() {
            let seconds = |micros: u64| micros as f64 / 1e6;
            let pick = |q: f64| seconds(self.latency_us.value_at_quantile(q));
            let _ = writeln!(
                out,
                " latency  p50 {}  p90 {}  p99 {}  max {}",
                format_seconds(pick(0.5)),
                format_seconds(pick(0.9)),
                format_seconds(pick(0.99)),
                format_seconds(seconds(self.latency_us.max())),
            );
            let _ = writeln!(
                out,
                " {:<36} {:>6} {:>10} {:>10}",
                "tokens by model", "calls", "input", "output"
            );
            for (model, totals) in &self.by_model {
                let _ = writeln!(
                    out,
                    "   {:<34} {:>6} {:>10} {:>10}",
                    model, totals.calls, totals.input_tokens, totals.output_tokens
                );
            }
        }
        let (http, reassembly) = (&report.http, &report.reassembly);
        let _ = writeln!(
            out,
            " traffic: {} HTTP exchanges ({} not LLM calls, {} responses left unread), {} HTTP/2 \
             streams; {} chunks ({} reordered, {} duplicates)",
            http.exchanges,
            report.stats.other_exchanges,
            http.responses_not_followed,
            http.http2_streams,
            reassembly.chunks,
            reassembly.reordered,
            reassembly.duplicates,
        );
        let given_up = report.given_up();
        let count = |reason: &str| {
            given_up
                .iter()
                .find(|g| g.reason == reason)
                .map_or(0, |g| g.count)
        };
        let _ = writeln!(
            out,
            " capture: {} events lost, {} calls truncated, {} parse failures",
            count("ring_buffer_full"),
            count("call_truncated"),
            count("parse_failure")
        );
        let given_up: Vec<String> = given_up
            .iter()
            .filter(|g| g.count > 0)
            .map(|g| format!("{}: {}", g.what, g.count))
            .collect();
        if given_up.is_empty() {
            let _ = writeln!(out, " given up: nothing (every byte seen was followed)");
        } else {
            let _ = writeln!(out, " given up: {}", given_up.join("; "));
        }
        for queue in &self.queues {
            if let Some(line) = queue_line(queue) {
                let _ = writeln!(out, " {line}");
            }
        }
        out
    }
}

/// What a sink delivered and lost, when it exports or lost anything.
fn queue_line(queue: &QueueHealth) -> Option<String> {
    let mut lost: Vec<String> = queue
        .export
        .iter()
        .flat_map(|export| export.outcomes())
        .filter(|&(outcome, _, count)| outcome != "exported" && count > 0)
        .map(|(_, what, count)| format!("{count} {what}"))
        .collect();
    if queue.dropped > 0 {
        lost.push(format!("{} dropped (queue full)", queue.dropped));
    }
    let mut line = match &queue.export {
        Some(export) => format!("{}: {} spans exported", queue.name, export.exported),
        None if lost.is_empty() => return None,
        None => format!("{}:", queue.name),
    };
    if !lost.is_empty() {
        let _ = write!(line, "; lost: {}", lost.join(", "));
    }
    if queue.export.is_some() && queue.depth > 0 {
        let _ = write!(line, "; {} not exported yet", queue.depth);
    }
    Some(line)
}

/// The summary as a sink: it hears every call; whoever made it reads it at the end.
#[derive(Clone, Default)]
pub struct SummarySink(Arc<Mutex<Summary>>);

impl SummarySink {
    pub fn summary(&self) -> MutexGuard<'_, Summary> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink for SummarySink {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        if span.is_call() {
            self.summary().record(span);
        }
        Ok(())
    }

    fn health(&mut self, _totals: &PipelineTotals, queues: &[QueueHealth]) {
        self.summary().queues = queues.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{GenAi, SpanKind};

    fn call(model: &str, millis: u64) -> Span {
        Span {
            trace_id: String::new(),
            span_id: String::new(),
            parent_span_id: None,
            name: "chat".into(),
            kind: SpanKind::Client,
            start_time_unix_nano: 0,
            end_time_unix_nano: millis * 1_000_000,
            gen_ai: GenAi {
                request_model: Some(model.into()),
                input_tokens: Some(10),
                ..GenAi::default()
            },
            attributes: Default::default(),
            links: Vec::new(),
        }
    }

    #[test]
    fn percentiles_and_models_stay_bounded() {
        let mut summary = Summary::default();
        for i in 0..10_000u64 {
            summary.record(&call(&format!("model-{i}"), 1 + i % 1000));
        }
        assert_eq!(summary.by_model.len(), MAX_MODELS + 1);
        assert_eq!(
            summary.by_model[OTHER_MODELS].calls,
            10_000 - MAX_MODELS as u64
        );
        let p50 = summary.latency_us.value_at_quantile(0.5) as f64 / 1e3;
        assert!((p50 - 500.0).abs() < 2.0, "p50 {p50} ms");
        assert_eq!(summary.latency_us.len(), 10_000);
        let report = Report {
            stats: Default::default(),
            http: Default::default(),
            reassembly: Default::default(),
            capture: Default::default(),
            actions: Default::default(),
        };
        let text = summary.render(&report);
        assert!(text.contains(" calls 10000 "), "{text}");
        assert!(text.contains("(other models)"), "{text}");
    }
}
