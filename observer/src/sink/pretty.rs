//! The live view: one readable line per call, and per thing an agent did between its calls
//! (a tool's execution, a command, an MCP request), indented under it.
use std::io::Write;

use serde_json::Value;

use super::Sink;
use crate::{llm::attr, span::Span};

pub struct PrettySink {
    out: Box<dyn Write + Send>,
    color: bool,
}

impl PrettySink {
    pub fn new(out: Box<dyn Write + Send>, color: bool) -> PrettySink {
        PrettySink { out, color }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

const PREVIEW_CHARS: usize = 60;

impl Sink for PrettySink {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        // Calls and actions: runs' roots are for trace views (`observer show`, OTLP backends).
        let paint = |code: &str, text: &str| self.paint(code, text);
        let line = if span.is_call() {
            render(span, paint)
        } else if is_action(span) {
            render_action(span, paint)
        } else {
            return Ok(());
        };
        writeln!(self.out, "{line}")?;
        self.out.flush()?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

fn render(span: &Span, paint: impl Fn(&str, &str) -> String) -> String {
    let text = |key: &str| {
        span.attribute(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let number = |key: &str| span.attribute(key).and_then(Value::as_u64);
    let time = format_clock(span.start_time_unix_nano);
    let process = format!(
        "{}[{}/{}]",
        text(attr::PROCESS_EXECUTABLE_NAME),
        number(attr::PROCESS_PID).unwrap_or(0),
        number(attr::THREAD_ID).unwrap_or(0)
    );
    let gen_ai = &span.gen_ai;
    let model = gen_ai.model().unwrap_or_default();
    let status =
        number(attr::HTTP_RESPONSE_STATUS_CODE).map_or("---".to_string(), |s| s.to_string());
    let error = gen_ai.error_type.as_deref().unwrap_or_default();
    let status = if error.is_empty() {
        paint("32", &status)
    } else {
        paint("31", &format!("{status} {error}"))
    };
    let mut line = format!(
        "{} {} {} {} {} {}",
        paint("2", &time),
        paint("36", &process),
        gen_ai.provider.as_deref().unwrap_or_default(),
        paint(
            "1",
            &format!(
                "{} {model}",
                gen_ai.operation.as_deref().unwrap_or_default()
            )
        ),
        status,
        format_seconds(span.duration_ns() as f64 / 1e9),
    );
    if span
        .attribute(attr::REQUEST_STREAM)
        .and_then(Value::as_bool)
        == Some(true)
    {
        line.push_str(" stream");
        if let Some(ttfc) = gen_ai.time_to_first_chunk {
            line.push_str(&format!(" ttfc {}", format_seconds(ttfc)));
        }
    }
    if let (Some(input), Some(output)) = (gen_ai.input_tokens, gen_ai.output_tokens) {
        line.push_str(&format!(" tokens {input}→{output}"));
    }
    let preview = output_preview(span);
    if !preview.is_empty() {
        line.push_str(&format!(" {}", paint("2", &format!("“{preview}”"))));
    }
    line
}

/// A tool's execution, a command or an MCP request: what an agent did between its calls.
fn is_action(span: &Span) -> bool {
    span.gen_ai.operation.as_deref() == Some("execute_tool")
        || span.attribute(attr::PROCESS_EXIT_CODE).is_some()
        || span
            .attribute(attr::OBSERVER_PROCESS_STILL_RUNNING)
            .is_some()
        || span.attribute(attr::MCP_METHOD_NAME).is_some()
}

/// `12:00:01.250   ↳ exec bash[4242] “bash -c echo hi; exit 3” 8ms ✗ 3`
fn render_action(span: &Span, paint: impl Fn(&str, &str) -> String) -> String {
    let pid = span.attribute(attr::PROCESS_PID).and_then(Value::as_u64);
    let mut line = format!(
        "{}   ↳ {}",
        paint("2", &format_clock(span.start_time_unix_nano)),
        paint("1", &span.name)
    );
    if let Some(pid) = pid {
        line.push_str(&paint("36", &format!("[{pid}]")));
    }
    let detail = match span.attribute(attr::PROCESS_COMMAND_ARGS) {
        Some(Value::Array(args)) => {
            let words: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
            preview(&words.join(" "))
        }
        _ => span
            .attribute(attr::TOOL_CALL_ID)
            .or_else(|| span.attribute(attr::NETWORK_TRANSPORT))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    if !detail.is_empty() {
        line.push_str(&format!(" {}", paint("2", &format!("“{detail}”"))));
    }
    line.push_str(&format!(
        " {}",
        format_seconds(span.duration_ns() as f64 / 1e9)
    ));
    if span
        .attribute(attr::OBSERVER_PROCESS_STILL_RUNNING)
        .is_some()
    {
        line.push_str(" still running");
    }
    if let Some(error) = &span.gen_ai.error_type {
        line.push_str(&format!(" {}", paint("31", &format!("✗ {error}"))));
    }
    line
}

/// `text` on one line, cut at `PREVIEW_CHARS`.
fn preview(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > PREVIEW_CHARS {
        format!("{}…", flat.chars().take(PREVIEW_CHARS).collect::<String>())
    } else {
        flat
    }
}

/// The start of the first output text, on one line.
fn output_preview(span: &Span) -> String {
    let Some(messages) = span
        .attribute(attr::OUTPUT_MESSAGES)
        .and_then(Value::as_array)
    else {
        return String::new();
    };
    let first_text = messages
        .iter()
        .flat_map(|m| {
            m.get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find_map(|part| match part.get("type").and_then(Value::as_str) {
            Some("text") => part
                .get("content")
                .and_then(Value::as_str)
                .map(str::to_string),
            Some("tool_call") => part
                .get("name")
                .and_then(Value::as_str)
                .map(|n| format!("→ {n}(…)")),
            _ => None,
        })
        .unwrap_or_default();
    preview(&first_text)
}

pub(super) fn format_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2}s")
    }
}

/// HH:MM:SS.mmm in UTC.
fn format_clock(unix_ns: u64) -> String {
    let ms = unix_ns / 1_000_000;
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::span::GenAi;

    #[test]
    fn renders_a_call_on_one_line() {
        let mut span = Span {
            trace_id: "t".into(),
            span_id: "s".into(),
            parent_span_id: None,
            name: "chat gpt-4o".into(),
            kind: Default::default(),
            start_time_unix_nano: 3_723_004_000_000,
            end_time_unix_nano: 3_724_504_000_000,
            gen_ai: GenAi::default(),
            attributes: Default::default(),
            links: Vec::new(),
        };
        for (k, v) in [
            ("process.executable.name", json!("python3")),
            ("process.pid", json!(10)),
            ("thread.id", json!(11)),
            ("gen_ai.provider.name", json!("openai")),
            ("gen_ai.operation.name", json!("chat")),
            ("gen_ai.request.model", json!("gpt-4o")),
            ("http.response.status_code", json!(200)),
            ("gen_ai.usage.input_tokens", json!(12)),
            ("gen_ai.usage.output_tokens", json!(3)),
            (
                "gen_ai.output.messages",
                json!([{"role":"assistant","parts":[{"type":"text","content":"Hi\nthere"}]}]),
            ),
        ] {
            span.attributes.insert(k.into(), v);
        }
        span.gen_ai = GenAi::take_from(&mut span.attributes);
        let line = render(&span, |_, t| t.to_string());
        assert_eq!(
            line,
            "01:02:03.004 python3[10/11] openai chat gpt-4o 200 1.50s tokens 12→3 “Hi there”"
        );
    }

    #[test]
    fn renders_a_command_under_its_run() {
        let mut span = Span {
            trace_id: "t".into(),
            span_id: "s".into(),
            parent_span_id: Some("p".into()),
            name: "exec bash".into(),
            kind: crate::span::SpanKind::Internal,
            start_time_unix_nano: 3_723_004_000_000,
            end_time_unix_nano: 3_723_012_000_000,
            gen_ai: GenAi {
                error_type: Some("3".into()),
                ..GenAi::default()
            },
            attributes: Default::default(),
            links: Vec::new(),
        };
        for (k, v) in [
            ("process.pid", json!(4242)),
            ("process.exit.code", json!(3)),
            (
                "process.command_args",
                json!(["bash", "-c", "echo hi;\n exit 3"]),
            ),
        ] {
            span.attributes.insert(k.into(), v);
        }
        let line = render_action(&span, |_, t| t.to_string());
        assert_eq!(
            line,
            "01:02:03.004   ↳ exec bash[4242] “bash -c echo hi; exit 3” 8ms ✗ 3"
        );
    }
}
