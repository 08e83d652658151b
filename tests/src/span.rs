//! A span as the observer writes it in JSON lines: a flat object of attributes.

use std::fmt;

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct Span(pub Map<String, Value>);

/// A tool call in an output message.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: Option<String>,
    /// The arguments as JSON (parsed if the span carries them as a JSON string).
    pub arguments: Value,
}

impl Span {
    /// An attribute; JSON null counts as absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// An LLM call the client made, not a span the observer inferred around calls (an agent
    /// run's `invoke_agent` root, an `execute_tool` gap, a command: INTERNAL) nor a request of
    /// another protocol (MCP: CLIENT, without a provider).
    pub fn is_call(&self) -> bool {
        self.str("kind") != Some("INTERNAL") && self.get("gen_ai.provider.name").is_some()
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// A structured attribute, whether written as JSON or as a string holding JSON.
    pub fn json(&self, key: &str) -> Option<Value> {
        match self.get(key)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            v => Some(v.clone()),
        }
    }

    /// `gen_ai.input.messages` / `gen_ai.output.messages` as a list of messages.
    pub fn messages(&self, key: &str) -> Vec<Value> {
        match self.json(key) {
            Some(Value::Array(messages)) => messages,
            _ => Vec::new(),
        }
    }

    fn parts<'a>(message: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        message["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(move |p| p["type"] == kind)
    }

    /// The concatenated text parts of a message.
    pub fn message_text(message: &Value) -> String {
        Self::parts(message, "text")
            .filter_map(|p| p["content"].as_str())
            .collect()
    }

    /// The concatenated text of all output messages.
    pub fn output_text(&self) -> String {
        self.messages("gen_ai.output.messages")
            .iter()
            .map(Self::message_text)
            .collect()
    }

    pub fn output_tool_calls(&self) -> Vec<ToolCall> {
        self.messages("gen_ai.output.messages")
            .iter()
            .flat_map(|m| Self::parts(m, "tool_call").cloned().collect::<Vec<_>>())
            .map(|p| ToolCall {
                id: p["id"].as_str().map(str::to_owned),
                name: p["name"].as_str().map(str::to_owned),
                arguments: match &p["arguments"] {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    v => v.clone(),
                },
            })
            .collect()
    }

    /// The text of the last input message with role `user`.
    pub fn last_user_text(&self) -> Option<String> {
        self.messages("gen_ai.input.messages")
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(Self::message_text)
    }

    pub fn finish_reasons(&self) -> Option<Vec<String>> {
        self.json("gen_ai.response.finish_reasons")
            .map(|v| match v {
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect(),
                other => vec![format!("<not an array: {other}>")],
            })
    }

    pub fn duration_secs(&self) -> Option<f64> {
        let start = self.u64("start_time_unix_nano")?;
        let end = self.u64("end_time_unix_nano")?;
        Some(end.checked_sub(start)? as f64 / 1e9)
    }

    /// Whether the span marks its token usage as estimated (not reported by the provider).
    pub fn usage_marked_estimated(&self) -> bool {
        self.0.iter().any(|(k, v)| {
            k.contains("usage")
                && (v == "estimated" || (k.contains("estimated") && v == &Value::Bool(true)))
        })
    }
}

/// Pretty JSON with long strings shortened, for failure messages.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn shorten(v: &Value) -> Value {
            match v {
                Value::String(s) if s.len() > 600 => {
                    let mut cut = 600;
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    Value::String(format!("{}… ({} bytes)", &s[..cut], s.len()))
                }
                Value::Array(a) => Value::Array(a.iter().map(shorten).collect()),
                Value::Object(o) => {
                    Value::Object(o.iter().map(|(k, v)| (k.clone(), shorten(v))).collect())
                }
                v => v.clone(),
            }
        }
        let pretty = serde_json::to_string_pretty(&shorten(&Value::Object(self.0.clone())))
            .map_err(|_| fmt::Error)?;
        f.write_str(&pretty)
    }
}
