//! Query results for a terminal: tables of traces and spans, and a trace drawn as a tree.
use std::fmt::Write as _;

use serde_json::Value;

use super::tree::SpanNode;
use crate::{llm::attr, query::TraceSummary, span::Span};

/// Dim, bold, red… only when writing to a terminal.
#[derive(Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

pub fn traces_table(traces: &[TraceSummary]) -> String {
    let mut out = format!(
        "{:<32}  {:<19}  {:>8}  {:>5}  {:>8}  {:>8}  {:>6}  {}\n",
        "TRACE", "START (UTC)", "DURATION", "SPANS", "IN", "OUT", "ERRORS", "ROOT"
    );
    for trace in traces {
        let _ = writeln!(
            out,
            "{:<32}  {:<19}  {:>8}  {:>5}  {:>8}  {:>8}  {:>6}  {}",
            trace.trace_id,
            format_utc(trace.start_time_unix_nano),
            format_duration(
                trace
                    .end_time_unix_nano
                    .saturating_sub(trace.start_time_unix_nano)
            ),
            trace.span_count,
            trace.input_tokens,
            trace.output_tokens,
            trace.error_count,
            trace.root_name,
        );
    }
    out
}

pub fn spans_table(spans: &[Span]) -> String {
    let mut out = format!(
        "{:<32}  {:<16}  {:<19}  {:>8}  {:>8}  {:>8}  {:<10}  {}\n",
        "TRACE", "SPAN", "START (UTC)", "DURATION", "IN", "OUT", "ERROR", "NAME"
    );
    for span in spans {
        let facts = SpanFacts::of(span);
        let _ = writeln!(
            out,
            "{:<32}  {:<16}  {:<19}  {:>8}  {:>8}  {:>8}  {:<10}  {}",
            span.trace_id,
            span.span_id,
            format_utc(span.start_time_unix_nano),
            format_duration(span.duration_ns()),
            facts.input_tokens.map_or("-".into(), |t| t.to_string()),
            facts.output_tokens.map_or("-".into(), |t| t.to_string()),
            facts.error.unwrap_or("-"),
            span.name,
        );
    }
    out
}

/// The attributes a tree line shows.
struct SpanFacts<'a> {
    model: Option<&'a str>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cost_usd: Option<f64>,
    error: Option<&'a str>,
}

impl<'a> SpanFacts<'a> {
    fn of(span: &'a Span) -> SpanFacts<'a> {
        let gen_ai = &span.gen_ai;
        SpanFacts {
            model: gen_ai.model(),
            input_tokens: gen_ai.input_tokens,
            output_tokens: gen_ai.output_tokens,
            cost_usd: gen_ai.cost_usd,
            error: gen_ai.error_type.as_deref(),
        }
    }
}

/// A header with the trace's totals, then one line per span, indented under its parent:
///
/// ```text
/// trace 4bf9…4736  3 spans  2.41s  tokens 1200 in / 340 out  $0.0123  1 error
/// chat gpt-4o  +0ms  1.20s  gpt-4o-2024-08-06  600 in / 200 out  $0.0100
/// ├─ execute_tool get_weather  +1.20s  300ms
/// └─ chat gpt-4o  +1.51s  900ms  gpt-4o-2024-08-06  600 in / 140 out  ✗ 429
/// ```
pub fn trace_tree(trace_id: &str, forest: &[SpanNode], style: Style) -> String {
    let all: Vec<&Span> = forest.iter().flat_map(flatten).collect();
    let start = all
        .iter()
        .map(|s| s.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let end = all.iter().map(|s| s.end_time_unix_nano).max().unwrap_or(0);
    let facts: Vec<SpanFacts> = all.iter().map(|s| SpanFacts::of(s)).collect();
    let sum = |pick: fn(&SpanFacts) -> Option<u64>| facts.iter().filter_map(pick).sum::<u64>();
    let cost: Option<f64> = facts.iter().filter_map(|f| f.cost_usd).reduce(|a, b| a + b);
    let errors = facts.iter().filter(|f| f.error.is_some()).count();

    let mut header = format!(
        "trace {}  {}  {}  tokens {} in / {} out",
        style.paint("1", trace_id),
        count(all.len(), "span"),
        format_duration(end.saturating_sub(start)),
        sum(|f| f.input_tokens),
        sum(|f| f.output_tokens),
    );
    if let Some(cost) = cost {
        let _ = write!(header, "  ${cost:.4}");
    }
    if errors > 0 {
        let _ = write!(header, "  {}", style.paint("31", &count(errors, "error")));
    }
    let mut out = format!("{header}\n");
    for root in forest {
        draw(root, "", None, start, style, &mut out);
    }
    out
}

/// `1 span`, `3 spans`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn flatten(node: &SpanNode) -> Vec<&Span> {
    std::iter::once(&node.span)
        .chain(node.children.iter().flat_map(flatten))
        .collect()
}

/// One node and its children; `last` is None for a root (drawn without a branch).
fn draw(
    node: &SpanNode,
    prefix: &str,
    last: Option<bool>,
    trace_start: u64,
    style: Style,
    out: &mut String,
) {
    let (branch, child_prefix) = match last {
        None => ("", prefix.to_string()),
        Some(true) => ("└─ ", format!("{prefix}   ")),
        Some(false) => ("├─ ", format!("{prefix}│  ")),
    };
    let _ = writeln!(
        out,
        "{}{} {}",
        style.paint("2", &format!("{prefix}{branch}")),
        style.paint("1", &node.span.name),
        span_details(&node.span, trace_start, style)
    );
    for (index, child) in node.children.iter().enumerate() {
        let is_last = index + 1 == node.children.len();
        draw(child, &child_prefix, Some(is_last), trace_start, style, out);
    }
}

/// How much of a command line a tree line shows.
const COMMAND_CHARS: usize = 60;

fn span_details(span: &Span, trace_start: u64, style: Style) -> String {
    let facts = SpanFacts::of(span);
    let offset = span.start_time_unix_nano.saturating_sub(trace_start);
    let mut line = format!(
        " {}  {}",
        style.paint("2", &format!("+{}", format_duration(offset))),
        format_duration(span.duration_ns())
    );
    if let Some(model) = facts.model {
        let _ = write!(line, "  {}", style.paint("36", model));
    }
    if facts.input_tokens.is_some() || facts.output_tokens.is_some() {
        let count = |t: Option<u64>| t.map_or("?".into(), |t| t.to_string());
        let _ = write!(
            line,
            "  {} in / {} out",
            count(facts.input_tokens),
            count(facts.output_tokens)
        );
    }
    if let Some(cost) = facts.cost_usd {
        let _ = write!(line, "  ${cost:.4}");
    }
    if let Some(Value::Array(args)) = span.attribute(attr::PROCESS_COMMAND_ARGS) {
        let words: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
        let mut command: String = words
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if command.chars().count() > COMMAND_CHARS {
            command = format!(
                "{}…",
                command.chars().take(COMMAND_CHARS).collect::<String>()
            );
        }
        let _ = write!(line, "  {}", style.paint("2", &format!("$ {command}")));
    }
    if let Some(code) = span.attribute(attr::PROCESS_EXIT_CODE) {
        let _ = write!(line, "  exit {code}");
    }
    if let Some(error) = facts.error {
        let _ = write!(line, "  {}", style.paint("31", &format!("✗ {error}")));
    }
    line
}

/// `850ms`, `2.41s`, `3m05s`.
pub fn format_duration(ns: u64) -> String {
    let ms = ns / 1_000_000;
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.2}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// `2026-05-19 14:03:07`, from the civil-from-days algorithm (no time zone database needed).
pub fn format_utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{query::tree::build_forest, store::tests::span};

    #[test]
    fn draws_a_trace_as_an_indented_tree() {
        let spans = vec![
            span("a", "1", None, 50, json!({"observer.cost.usd": 0.01})),
            span(
                "a",
                "2",
                Some("1"),
                40,
                json!({"gen_ai.response.model": "gpt-4o-2024-08-06"}),
            ),
            span("a", "3", Some("2"), 30, json!({"error.type": "429"})),
            span(
                "a",
                "4",
                Some("1"),
                20,
                json!({"observer.cost.usd": 0.0025}),
            ),
        ];
        let text = trace_tree("a", &build_forest(spans), Style { color: false });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "trace a  4 spans  30.50s  tokens 400 in / 80 out  $0.0125  1 error"
        );
        assert_eq!(
            lines[1],
            "chat gpt-4o  +0ms  500ms  gpt-4o  100 in / 20 out  $0.0100"
        );
        assert!(lines[2].starts_with("├─ chat gpt-4o  +10.00s  500ms  gpt-4o-2024-08-06"));
        assert!(lines[3].starts_with("│  └─ chat gpt-4o  +20.00s"));
        assert!(lines[3].ends_with("✗ 429"), "{}", lines[3]);
        assert!(lines[4].starts_with("└─ chat gpt-4o  +30.00s"));
    }

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_709_210_096_000_000_000), "2024-02-29 12:34:56");
        assert_eq!(format_duration(850_000_000), "850ms");
        assert_eq!(format_duration(2_410_000_000), "2.41s");
        assert_eq!(format_duration(185_000_000_000), "3m05s");
    }
}
