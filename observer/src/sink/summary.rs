//! The end-of-session summary: calls, tokens by model, errors, latency percentiles.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use super::pretty::format_seconds;
use crate::{
    pipeline::{GIVEN_UP_REASONS, GivenUp},
    span::Span,
};

#[derive(Default)]
pub struct Summary {
    calls: u64,
    errors: u64,
    incomplete: u64,
    durations: Vec<f64>,
    by_model: BTreeMap<String, ModelTotals>,
}

#[derive(Default)]
struct ModelTotals {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
}

/// The observer's own health, printed under the calls: what it gave up on, by reason.
#[derive(Clone, Copy, Debug)]
pub struct Health {
    pub given_up: [GivenUp; GIVEN_UP_REASONS],
}

impl Health {
    fn count(&self, reason: &str) -> u64 {
        self.given_up
            .iter()
            .find(|g| g.reason == reason)
            .map_or(0, |g| g.count)
    }
}

impl Summary {
    pub fn record(&mut self, span: &Span) {
        self.calls += 1;
        if span.attribute("error.type").is_some() {
            self.errors += 1;
        }
        // Cut short before the call's end (a stream ended by its last event is whole even if
        // the connection closed before the HTTP body's end).
        if span.attribute("observer.exchange.end").is_some()
            && span.attribute("error.type").is_some()
        {
            self.incomplete += 1;
        }
        self.durations.push(span.duration_ns() as f64 / 1e9);
        let model = ["gen_ai.response.model", "gen_ai.request.model"]
            .iter()
            .find_map(|k| span.attribute(k).and_then(Value::as_str))
            .unwrap_or("(unknown model)");
        let totals = self.by_model.entry(model.to_string()).or_default();
        totals.calls += 1;
        let tokens = |key| span.attribute(key).and_then(Value::as_u64).unwrap_or(0);
        totals.input_tokens += tokens("gen_ai.usage.input_tokens");
        totals.output_tokens += tokens("gen_ai.usage.output_tokens");
    }

    pub fn render(&self, health: Health) -> String {
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
        if !self.durations.is_empty() {
            let mut sorted = self.durations.clone();
            sorted.sort_by(f64::total_cmp);
            let pick = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            let _ = writeln!(
                out,
                " latency  p50 {}  p90 {}  p99 {}  max {}",
                format_seconds(pick(0.5)),
                format_seconds(pick(0.9)),
                format_seconds(pick(0.99)),
                format_seconds(pick(1.0)),
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
        let _ = writeln!(
            out,
            " capture: {} events lost, {} calls truncated, {} parse failures",
            health.count("ring_buffer_full"),
            health.count("call_truncated"),
            health.count("parse_failure")
        );
        let given_up: Vec<String> = health
            .given_up
            .iter()
            .filter(|g| g.count > 0)
            .map(|g| format!("{}: {}", g.what, g.count))
            .collect();
        if given_up.is_empty() {
            let _ = writeln!(out, " given up: nothing (every byte seen was followed)");
        } else {
            let _ = writeln!(out, " given up: {}", given_up.join("; "));
        }
        out
    }
}
