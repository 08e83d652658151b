//! What a client saw of one call (printed by tests/clients/*.py), and the checks that the
//! observer's span for it says the same.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::mock;
use crate::span::Span;

/// One call record printed by a client.
#[derive(Clone, Debug)]
pub struct ClientCall(pub Value);

impl ClientCall {
    /// The records among a client's output lines (JSON objects with a `call` key).
    pub fn parse_all(stdout: &str) -> Vec<ClientCall> {
        stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("call").is_some())
            .map(ClientCall)
            .collect()
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }

    pub fn name(&self) -> &str {
        self.str("call").unwrap_or("?")
    }
    pub fn pid(&self) -> u64 {
        self.u64("pid").expect("record has pid")
    }
    pub fn tid(&self) -> u64 {
        self.u64("tid").expect("record has tid")
    }
    /// The thread that made the call, when the client knows it. Go clients do not: goroutines
    /// move between threads, and the runtime writes requests from goroutines of its own.
    pub fn known_tid(&self) -> Option<u64> {
        self.u64("tid")
    }
    pub fn path(&self) -> &str {
        self.str("path").expect("record has path")
    }
    pub fn model(&self) -> &str {
        self.str("model").expect("record has model")
    }
    pub fn prompt(&self) -> &str {
        self.str("prompt").unwrap_or("")
    }
    pub fn status(&self) -> u64 {
        self.u64("status").expect("record has status")
    }
    pub fn stream(&self) -> bool {
        self.0["stream"].as_bool().unwrap_or(false)
    }
    pub fn response_id(&self) -> Option<&str> {
        self.str("response_id")
    }
    pub fn text(&self) -> &str {
        self.str("text").unwrap_or("")
    }
    pub fn input_tokens(&self) -> Option<u64> {
        self.u64("input_tokens")
    }
    pub fn output_tokens(&self) -> Option<u64> {
        self.u64("output_tokens")
    }
    pub fn finish_reason(&self) -> Option<&str> {
        self.str("finish_reason")
    }
    pub fn tool_calls(&self) -> Vec<Value> {
        self.0["tool_calls"].as_array().cloned().unwrap_or_default()
    }

    /// Whether the stream broke off before its end (the client kept what arrived).
    pub fn interrupted(&self) -> bool {
        self.0["interrupted"].as_bool().unwrap_or(false)
    }

    /// `gen_ai.provider.name`: as the record says, else from the OpenAI/Anthropic path.
    pub fn provider(&self) -> &str {
        self.str("provider")
            .unwrap_or(if self.path() == "/v1/messages" {
                "anthropic"
            } else {
                "openai"
            })
    }

    /// `gen_ai.operation.name`: as the record says, else from the OpenAI/Anthropic path.
    pub fn operation(&self) -> &str {
        self.str("operation").unwrap_or(match self.path() {
            "/v1/embeddings" => "embeddings",
            "/v1/completions" => "text_completion",
            _ => "chat",
        })
    }

    /// Checks the client's own view against the mock model, so a scenario that silently did
    /// something else (say, a reply that is not the big one) fails here and not as a riddle.
    pub fn assert_consistent_with_mock(&self) {
        if self.status() != 200 || self.operation() == "embeddings" || self.interrupted() {
            return;
        }
        if self.tool_calls().is_empty() {
            assert_eq!(
                self.text(),
                mock::reply_text(self.prompt()),
                "client {} received an unexpected reply: {}",
                self.name(),
                self.0
            );
        }
    }
}

/// The finish reasons the observer may report for a provider's raw value: the raw value, or
/// the OpenTelemetry output-message finish reason it maps to.
fn finish_aliases(raw: &str) -> Vec<&str> {
    let normalised = match raw {
        "end_turn" | "stop_sequence" | "completed" | "STOP" => "stop",
        "tool_calls" | "tool_use" => "tool_call",
        "max_tokens" | "incomplete" | "MAX_TOKENS" => "length",
        other => other,
    };
    vec![raw, normalised]
}

/// Collects every mismatch between one span and one client call.
struct Check<'a> {
    span: &'a Span,
    problems: Vec<String>,
}

impl Check<'_> {
    fn fail(&mut self, problem: String) {
        self.problems.push(problem);
    }

    fn eq(&mut self, key: &str, expected: Value) {
        let actual = self.span.get(key).cloned().unwrap_or(Value::Null);
        let same = match (actual.as_f64(), expected.as_f64()) {
            (Some(a), Some(e)) if actual.is_f64() || expected.is_f64() => (a - e).abs() < 1e-9,
            _ => actual == expected,
        };
        if !same {
            self.fail(format!("{key}: expected {expected}, got {actual}"));
        }
    }

    fn absent(&mut self, key: &str, why: &str) {
        if let Some(v) = self.span.get(key) {
            self.fail(format!("{key}: expected absent ({why}), got {v}"));
        }
    }

    /// Token counts the client saw must be reported exactly; counts the client did not get
    /// (a stream without usage) must be absent, or marked as estimated.
    fn tokens(&mut self, key: &str, seen: Option<u64>) {
        match seen {
            Some(n) => self.eq(key, n.into()),
            None => {
                if let Some(v) = self.span.get(key)
                    && !self.span.usage_marked_estimated()
                {
                    self.fail(format!(
                        "{key}: the provider reported no usage, yet the span says {v} without marking it estimated"
                    ));
                }
            }
        }
    }
}

/// The problems with `span` as the record of `call` (empty when it is right).
pub fn check_span(span: &Span, call: &ClientCall, server_port: u16) -> Vec<String> {
    let mut c = Check {
        span,
        problems: Vec::new(),
    };
    let op = call.operation();
    c.eq("name", format!("{op} {}", call.model()).into());
    c.eq("gen_ai.provider.name", call.provider().into());
    c.eq("gen_ai.operation.name", op.into());
    c.eq("gen_ai.request.model", call.model().into());
    c.eq("process.pid", call.pid().into());
    match call.known_tid() {
        Some(tid) => c.eq("thread.id", tid.into()),
        None => {
            if span.u64("thread.id").is_none_or(|tid| tid == 0) {
                c.fail(format!(
                    "thread.id: expected the id of the thread that wrote the request, got {:?}",
                    span.get("thread.id")
                ));
            }
        }
    }
    let exe = span.str("process.executable.name");
    let names = [call.str("comm"), call.str("exe")];
    if exe.is_none() || !names.contains(&exe) {
        c.fail(format!(
            "process.executable.name: expected one of {names:?}, got {exe:?}"
        ));
    }
    c.eq("server.address", "127.0.0.1".into());
    c.eq("server.port", server_port.into());
    c.eq("url.path", call.path().into());
    c.eq("http.request.method", "POST".into());
    c.eq("http.response.status_code", call.status().into());
    if call.stream() || span.get("gen_ai.request.stream").is_some() {
        c.eq("gen_ai.request.stream", call.stream().into());
    }
    for (field, key) in [
        ("temperature", "gen_ai.request.temperature"),
        ("max_tokens", "gen_ai.request.max_tokens"),
    ] {
        if let Some(v) = call.0.get(field) {
            c.eq(key, v.clone());
        }
    }
    check_ids_and_times(&mut c);

    if call.interrupted() {
        check_interrupted(&mut c, call);
        return c.problems;
    }
    if call.status() != 200 {
        if span.str("error.type").is_none_or(str::is_empty) {
            c.fail(format!(
                "error.type: expected set for HTTP {}, got {:?}",
                call.status(),
                span.get("error.type")
            ));
        }
        // What the provider named the error, and its message, as the client's SDK read them.
        if let Some(kind) = call.str("error_type") {
            c.eq("error.type", kind.into());
        }
        if let Some(message) = call.str("error_message") {
            c.eq("observer.error.message", message.into());
        }
        if !span.output_text().is_empty() {
            c.fail("gen_ai.output.messages: an error response has no output text".into());
        }
        return c.problems;
    }

    c.absent("error.type", "the call succeeded");
    match call.str("response_model") {
        Some(model) => c.eq("gen_ai.response.model", model.into()),
        None => c.absent("gen_ai.response.model", "the response names no model"),
    }
    match call.response_id() {
        Some(id) => c.eq("gen_ai.response.id", id.into()),
        None => c.absent("gen_ai.response.id", "the response has no id"),
    }
    c.tokens("gen_ai.usage.input_tokens", call.input_tokens());
    c.tokens("gen_ai.usage.output_tokens", call.output_tokens());
    check_derived(&mut c, call, op);

    let reasons = span.finish_reasons();
    match call.finish_reason() {
        Some(raw) => {
            let aliases = finish_aliases(raw);
            let ok = reasons
                .as_ref()
                .is_some_and(|r| r.len() == 1 && aliases.contains(&r[0].as_str()));
            if !ok {
                c.fail(format!(
                    "gen_ai.response.finish_reasons: expected [{}] (one of {aliases:?}), got {reasons:?}",
                    raw
                ));
            }
            for message in span.messages("gen_ai.output.messages") {
                if let Some(fr) = message["finish_reason"].as_str()
                    && !aliases.contains(&fr)
                {
                    c.fail(format!(
                        "gen_ai.output.messages finish_reason: expected one of {aliases:?}, got {fr:?}"
                    ));
                }
            }
        }
        None => {
            if reasons.as_ref().is_some_and(|r| !r.is_empty()) {
                c.fail(format!(
                    "gen_ai.response.finish_reasons: expected none, got {reasons:?}"
                ));
            }
        }
    }

    if op == "embeddings" {
        if !span.messages("gen_ai.output.messages").is_empty() {
            c.fail("gen_ai.output.messages: embeddings have no output messages".into());
        }
    } else {
        check_output(&mut c, call);
        check_input(&mut c, call, op);
    }

    if call.stream() {
        check_stream_timing(&mut c);
        let ttfc = span.f64("gen_ai.response.time_to_first_chunk");
        let duration = span.duration_secs().unwrap_or(0.0);
        if !ttfc.is_some_and(|t| t > 0.0 && t <= duration + 1e-3) {
            c.fail(format!(
                "gen_ai.response.time_to_first_chunk: expected seconds in (0, {duration}] for a stream, got {:?}",
                span.get("gen_ai.response.time_to_first_chunk")
            ));
        }
    }
    c.problems
}

/// The attributes derived from the call: OpenInference names, prompt fingerprint, cost.
fn check_derived(c: &mut Check, call: &ClientCall, op: &str) {
    let kind = if op == "embeddings" {
        "EMBEDDING"
    } else {
        "LLM"
    };
    c.eq("openinference.span.kind", kind.into());
    let model = call.str("response_model").unwrap_or(call.model());
    c.eq("llm.model_name", model.into());
    if let Some(input) = call.input_tokens() {
        c.eq("llm.token_count.prompt", input.into());
        let total = input + call.output_tokens().unwrap_or(0);
        c.eq("llm.token_count.total", total.into());
    }
    let fingerprint = c.span.str("observer.prompt.fingerprint");
    if !fingerprint.is_some_and(|f| f.len() == 16 && f.chars().all(|ch| ch.is_ascii_hexdigit())) {
        c.fail(format!(
            "observer.prompt.fingerprint: expected 16 hex digits, got {fingerprint:?}"
        ));
    }
    let cost = c.span.f64("observer.cost.usd");
    let unknown = c.span.str("observer.cost.unknown");
    match (cost, unknown) {
        (Some(usd), None) if usd >= 0.0 => {}
        (None, Some(why)) if !why.is_empty() => {}
        _ => c.fail(format!(
            "observer.cost.usd / observer.cost.unknown: expected one of them, got {cost:?} / {unknown:?}"
        )),
    }
}

/// Output chunks counted, and the mean gap between them within the call's duration.
fn check_stream_timing(c: &mut Check) {
    let chunks = c.span.u64("observer.stream.output_chunk_count");
    let per_chunk = c.span.f64("gen_ai.response.time_per_output_chunk");
    let duration = c.span.duration_secs().unwrap_or(0.0);
    match (chunks, per_chunk) {
        (Some(n), Some(t)) if n >= 2 && (0.0..=duration + 1e-3).contains(&t) => {}
        (Some(n), None) if n < 2 => {}
        _ => c.fail(format!(
            "observer.stream.output_chunk_count / gen_ai.response.time_per_output_chunk: expected a count and, from two chunks on, seconds in [0, {duration}], got {chunks:?} / {per_chunk:?}"
        )),
    }
}

/// A stream that broke off: an error, finish reason "error", and the output that arrived.
fn check_interrupted(c: &mut Check, call: &ClientCall) {
    if c.span.str("error.type").is_none_or(str::is_empty) {
        c.fail(format!(
            "error.type: expected set for an interrupted stream, got {:?}",
            c.span.get("error.type")
        ));
    }
    let reasons = c.span.finish_reasons();
    if reasons.as_deref() != Some(&["error".to_owned()][..]) {
        c.fail(format!(
            "gen_ai.response.finish_reasons: expected [\"error\"] for an interrupted stream, got {reasons:?}"
        ));
    }
    if let Some(id) = call.response_id() {
        c.eq("gen_ai.response.id", id.into());
    }
    let text = c.span.output_text();
    if text != call.text() || text.is_empty() {
        c.fail(format!(
            "gen_ai.output.messages text: expected what arrived before the cut, {:?}, got {text:?}",
            call.text()
        ));
    }
}

fn check_ids_and_times(c: &mut Check) {
    for (key, len) in [("trace_id", 32), ("span_id", 16)] {
        let ok = c.span.str(key).is_some_and(|v| {
            v.len() == len
                && v.chars().all(|ch| ch.is_ascii_hexdigit())
                && v.chars().any(|ch| ch != '0')
        });
        if !ok {
            c.fail(format!(
                "{key}: expected {len} hex digits, not all zero, got {:?}",
                c.span.get(key)
            ));
        }
    }
    let start = c.span.u64("start_time_unix_nano");
    let end = c.span.u64("end_time_unix_nano");
    match (start, end) {
        (Some(s), Some(e)) if s > 1_600_000_000_000_000_000 && e >= s => {}
        _ => c.fail(format!(
            "start/end_time_unix_nano: expected plausible times with start <= end, got {start:?} / {end:?}"
        )),
    }
}

fn check_output(c: &mut Check, call: &ClientCall) {
    let text = c.span.output_text();
    if text != call.text() {
        c.fail(format!(
            "gen_ai.output.messages text: expected {:?} ({} bytes), got {:?} ({} bytes){}",
            shorten(call.text()),
            call.text().len(),
            shorten(&text),
            text.len(),
            first_difference(call.text(), &text)
        ));
    }
    let messages = c.span.messages("gen_ai.output.messages");
    if messages.is_empty() || messages.iter().any(|m| m["role"] != "assistant") {
        c.fail(format!(
            "gen_ai.output.messages: expected assistant message(s), got {}",
            c.span
                .get("gen_ai.output.messages")
                .cloned()
                .unwrap_or(Value::Null)
        ));
    }
    let expected: Vec<Value> = call.tool_calls();
    let actual = c.span.output_tool_calls();
    let same = expected.len() == actual.len()
        && expected.iter().zip(&actual).all(|(e, a)| {
            let args: Value = e["arguments"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
            e["id"].as_str() == a.id.as_deref()
                && e["name"].as_str() == a.name.as_deref()
                && args == a.arguments
        });
    if !same {
        c.fail(format!(
            "tool calls in gen_ai.output.messages: expected {expected:?}, got {actual:?}"
        ));
    }
}

fn check_input(c: &mut Check, call: &ClientCall, op: &str) {
    let messages = c.span.messages("gen_ai.input.messages");
    if messages.is_empty() {
        if op == "chat" {
            c.fail("gen_ai.input.messages: missing for a chat call".into());
        }
        return;
    }
    // Content may legitimately be truncated when it is huge; check it exactly when small.
    if call.prompt().len() <= 4096 {
        let user = c.span.last_user_text();
        if user.as_deref() != Some(call.prompt()) {
            c.fail(format!(
                "gen_ai.input.messages: expected the last user message {:?}, got {user:?}",
                call.prompt()
            ));
        }
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_owned();
    }
    let mut cut = 300;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

fn first_difference(expected: &str, actual: &str) -> String {
    let at = expected
        .bytes()
        .zip(actual.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let around = |s: &str| {
        let mut from = at.saturating_sub(40);
        while !s.is_char_boundary(from) {
            from -= 1;
        }
        let mut to = (at + 40).min(s.len());
        while !s.is_char_boundary(to) {
            to += 1;
        }
        s[from..to].to_owned()
    };
    format!(
        "; first difference at byte {at}: expected …{:?}…, got …{:?}…",
        around(expected),
        around(actual)
    )
}

/// Whether `span` is the observer's record of `call`: the same response id, or for calls
/// without one (errors, embeddings) the same process, path, model and status.
fn is_span_of(span: &Span, call: &ClientCall) -> bool {
    match call.response_id() {
        Some(id) => span.str("gen_ai.response.id") == Some(id),
        None => {
            span.get("gen_ai.response.id").is_none()
                && span.u64("process.pid") == Some(call.pid())
                && span.str("url.path") == Some(call.path())
                && span.str("gen_ai.request.model") == Some(call.model())
                && span.u64("http.response.status_code") == Some(call.status())
                // Calls alike in all that differ in their prompt (when the span has one).
                && span
                    .last_user_text()
                    .is_none_or(|text| call.prompt().is_empty() || text == call.prompt())
        }
    }
}

/// Asserts that the spans of the clients' processes are exactly one per call, each saying what
/// the client saw. Panics with every problem found, each with the offending span.
pub fn assert_spans_match_calls(spans: &[Span], calls: &[ClientCall], server_port: u16) {
    assert!(!calls.is_empty(), "the clients reported no calls");
    let pids: HashSet<u64> = calls.iter().map(ClientCall::pid).collect();
    let relevant: Vec<&Span> = spans
        .iter()
        .filter(|s| s.is_call() && s.u64("process.pid").is_some_and(|p| pids.contains(&p)))
        .collect();
    let mut report = String::new();
    let mut used = HashSet::new();
    for call in calls {
        let matches: Vec<usize> = (0..relevant.len())
            .filter(|&i| is_span_of(relevant[i], call))
            .collect();
        match matches.as_slice() {
            [] => {
                let _ = writeln!(
                    report,
                    "\n✗ call {:?} (pid {}, tid {:?}, {} {}, response id {:?}): NO SPAN",
                    call.name(),
                    call.pid(),
                    call.known_tid(),
                    call.path(),
                    call.model(),
                    call.response_id()
                );
            }
            [i] => {
                used.insert(*i);
                let problems = check_span(relevant[*i], call, server_port);
                if !problems.is_empty() {
                    let _ = writeln!(
                        report,
                        "\n✗ call {:?} (pid {}): {} problem(s):\n  - {}\n  span: {}",
                        call.name(),
                        call.pid(),
                        problems.len(),
                        problems.join("\n  - "),
                        relevant[*i]
                    );
                }
            }
            many => {
                used.extend(many.iter().copied());
                let _ = writeln!(
                    report,
                    "\n✗ call {:?}: {} spans (duplicated):\n{}",
                    call.name(),
                    many.len(),
                    many.iter()
                        .map(|&i| relevant[i].to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
    for (i, span) in relevant.iter().enumerate() {
        if !used.contains(&i) {
            let _ = writeln!(
                report,
                "\n✗ a span that matches no client call (extra, duplicated or merged):\n{span}"
            );
        }
    }
    let mut ids = HashSet::new();
    for span in spans {
        if let Some(id) = span.str("span_id")
            && !ids.insert(id)
        {
            let _ = writeln!(report, "\n✗ span_id {id} is used by more than one span");
        }
    }
    assert!(
        report.is_empty(),
        "the observer's spans do not match what the clients saw ({} calls, {} spans from their processes, {} spans in all):{report}",
        calls.len(),
        relevant.len(),
        spans.len()
    );
}

/// Asserts that replaying a recording gives the same spans as the live capture (ids and
/// the observer's own `observer.*` bookkeeping aside).
pub fn assert_same_spans(live: &[Span], replayed: &[Span]) {
    fn comparable(span: &Span) -> Span {
        let mut s = span.clone();
        s.0.retain(|k, _| {
            !matches!(
                k.as_str(),
                "trace_id" | "span_id" | "parent_span_id" | "links"
            ) && !k.starts_with("observer.")
        });
        s
    }
    fn key(span: &Span) -> String {
        format!(
            "{:?}/{:?}/{:?}/{:?}",
            span.u64("start_time_unix_nano"),
            span.u64("process.pid"),
            span.str("gen_ai.response.id"),
            span.str("url.path")
        )
    }
    let sorted = |spans: &[Span]| {
        let mut v: Vec<Span> = spans.iter().map(comparable).collect();
        v.sort_by_key(key);
        v
    };
    let (live, replayed) = (sorted(live), sorted(replayed));
    let mut report = String::new();
    if live.len() != replayed.len() {
        let _ = writeln!(
            report,
            "live capture has {} spans, replay has {}",
            live.len(),
            replayed.len()
        );
    }
    for (l, r) in live.iter().zip(&replayed) {
        let keys: HashSet<&String> = l.0.keys().chain(r.0.keys()).collect();
        let mut diffs: Vec<String> = keys
            .into_iter()
            .filter(|k| l.0.get(*k) != r.0.get(*k))
            .map(|k| format!("{k}: live {:?} vs replay {:?}", l.0.get(k), r.0.get(k)))
            .collect();
        diffs.sort();
        if !diffs.is_empty() {
            let _ = writeln!(
                report,
                "\nspan {}: {}",
                key(l),
                diffs
                    .iter()
                    .map(|d| shorten(d))
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
    }
    assert!(
        report.is_empty(),
        "replay differs from the live capture:\n{report}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call() -> ClientCall {
        ClientCall(json!({
            "call": "chat_stream", "pid": 42, "tid": 43, "comm": "python", "exe": "python3.11",
            "path": "/v1/chat/completions", "model": "gpt-4o", "prompt": "hi there",
            "stream": true, "status": 200, "response_id": "chatcmpl-1",
            "response_model": "gpt-4o-2025-01-01", "text": "Hello ✓\n", "finish_reason": "tool_calls",
            "tool_calls": [{"id": "call_1", "name": "f", "arguments": "{\"a\": 1}"}],
            "input_tokens": 5, "output_tokens": 7, "temperature": 0.25
        }))
    }

    /// A span as the CLI contract describes it, agreeing with `call()`.
    fn span() -> Span {
        let Value::Object(map) = json!({
            "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
            "parent_span_id": null, "name": "chat gpt-4o",
            "start_time_unix_nano": 1_750_000_000_000_000_000u64,
            "end_time_unix_nano": 1_750_000_001_000_000_000u64,
            "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2025-01-01",
            "gen_ai.response.id": "chatcmpl-1", "gen_ai.usage.input_tokens": 5,
            "gen_ai.usage.output_tokens": 7, "gen_ai.response.finish_reasons": ["tool_calls"],
            "gen_ai.request.stream": true, "gen_ai.request.temperature": 0.25,
            "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi there"}]}],
            "gen_ai.output.messages": "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"text\",\"content\":\"Hello ✓\\n\"},{\"type\":\"tool_call\",\"id\":\"call_1\",\"name\":\"f\",\"arguments\":{\"a\":1}}],\"finish_reason\":\"tool_call\"}]",
            "server.address": "127.0.0.1", "server.port": 8443, "url.path": "/v1/chat/completions",
            "http.request.method": "POST", "http.response.status_code": 200, "process.pid": 42,
            "thread.id": 43, "process.executable.name": "python",
            "gen_ai.response.time_to_first_chunk": 0.2
        }) else {
            unreachable!()
        };
        Span(map)
    }

    #[test]
    fn a_span_that_agrees_passes() {
        assert_eq!(check_span(&span(), &call(), 8443), Vec::<String>::new());
        assert_spans_match_calls(&[span()], &[call()], 8443);
    }

    #[test]
    fn each_disagreement_is_reported() {
        for (key, value, needle) in [
            ("gen_ai.usage.output_tokens", json!(8), "output_tokens"),
            ("thread.id", json!(42), "thread.id"),
            (
                "gen_ai.response.finish_reasons",
                json!(["stop"]),
                "finish_reasons",
            ),
            ("gen_ai.request.stream", json!(false), "stream"),
            (
                "gen_ai.response.time_to_first_chunk",
                json!(5.0),
                "time_to_first_chunk",
            ),
            ("error.type", json!("timeout"), "error.type"),
            ("span_id", json!("xyz"), "span_id"),
        ] {
            let mut s = span();
            s.0.insert(key.into(), value);
            let problems = check_span(&s, &call(), 8443);
            assert!(
                problems.len() == 1 && problems[0].contains(needle),
                "{key}: {problems:?}"
            );
        }
        let mut s = span();
        s.0.insert(
            "gen_ai.output.messages".into(),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}]}]),
        );
        let problems = check_span(&s, &call(), 8443);
        assert!(
            problems.iter().any(|p| p.contains("text"))
                && problems.iter().any(|p| p.contains("tool calls")),
            "{problems:?}"
        );
    }

    #[test]
    fn usage_absent_from_the_wire_must_be_absent_or_estimated() {
        let mut c = call();
        c.0["input_tokens"] = Value::Null;
        c.0["output_tokens"] = Value::Null;
        assert_eq!(check_span(&span(), &c, 8443).len(), 2);
        let mut s = span();
        s.0.insert("observer.usage.source".into(), json!("estimated"));
        assert!(check_span(&s, &c, 8443).is_empty());
        s.0.remove("gen_ai.usage.input_tokens");
        s.0.remove("gen_ai.usage.output_tokens");
        assert!(check_span(&s, &c, 8443).is_empty());
    }

    #[test]
    #[should_panic(expected = "duplicated")]
    fn a_duplicated_span_fails() {
        let mut twin = span();
        twin.0.insert("span_id".into(), json!("c7ad6b7169203331"));
        assert_spans_match_calls(&[span(), twin], &[call()], 8443);
    }
}
