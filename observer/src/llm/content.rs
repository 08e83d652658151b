//! How much message text a span keeps (`--content`): `full`, `redacted` (each text replaced by
//! its length and a hash, so equal texts still compare equal) or `none` (metadata only). In
//! every mode a string longer than the cap is cut, with a marker saying how much was dropped.
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{LlmCall, attr};

/// How much prompt and completion text spans keep. The daemon keeps metadata only unless its
/// configuration asks for more (it sees every user's prompts, and the OpenTelemetry GenAI
/// conventions make content opt-in); `capture` and `replay`, a user watching their own
/// programs, keep everything (`Config::with_output`).
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    /// Messages, system instructions and tool definitions as sent and received.
    Full,
    /// Each text, tool argument and tool result replaced by its length and a hash.
    Redacted,
    /// Metadata only: no messages, system instructions or tool definitions.
    #[default]
    None,
}

/// Strings past this many bytes are cut (per string inside an attribute).
pub const DEFAULT_MAX_STRING_BYTES: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentOptions {
    pub mode: ContentMode,
    pub max_string_bytes: usize,
}

impl Default for ContentOptions {
    fn default() -> Self {
        ContentOptions {
            mode: ContentMode::Full,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
        }
    }
}

/// Attributes that carry what users and models wrote.
pub const MESSAGE_ATTRIBUTES: &[&str] = &[
    attr::INPUT_MESSAGES,
    attr::OUTPUT_MESSAGES,
    attr::SYSTEM_INSTRUCTIONS,
];
/// Fields of a message part that hold content (text, tool arguments, tool results).
const CONTENT_FIELDS: &[&str] = &["content", "arguments", "response"];

/// Keeps of `call`'s message text what `options` say, and cuts long strings.
pub(crate) fn apply(call: &mut LlmCall, options: ContentOptions) {
    match options.mode {
        ContentMode::Full => {}
        ContentMode::None => {
            for key in MESSAGE_ATTRIBUTES.iter().chain([&attr::TOOL_DEFINITIONS]) {
                call.attributes.remove(*key);
            }
        }
        ContentMode::Redacted => {
            for key in MESSAGE_ATTRIBUTES {
                if let Some(value) = call.attributes.get_mut(*key) {
                    redact_parts(value);
                }
            }
        }
    }
    let mut truncated = 0u64;
    for value in call.attributes.values_mut() {
        truncated += cap_strings(value, options.max_string_bytes);
    }
    if truncated > 0 {
        call.set(attr::OBSERVER_CONTENT_TRUNCATED_STRINGS, truncated);
    }
}

/// Replaces every content field of every part with its length and hash.
fn redact_parts(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(redact_parts),
        Value::Object(object) => {
            for (key, field) in object.iter_mut() {
                if CONTENT_FIELDS.contains(&key.as_str()) {
                    *field = Value::String(redacted(field));
                } else {
                    redact_parts(field);
                }
            }
        }
        _ => {}
    }
}

fn redacted(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let digest = Sha256::digest(text.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("[redacted: {} bytes, sha256 {hash}]", text.len())
}

/// Cuts strings over `max` bytes (at a character boundary) and marks them; returns how many.
fn cap_strings(value: &mut Value, max: usize) -> u64 {
    match value {
        Value::String(text) if text.len() > max => {
            let mut cut = max;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let dropped = text.len() - cut;
            text.truncate(cut);
            text.push_str(&format!("…[truncated {dropped} bytes]"));
            1
        }
        Value::Array(items) => items.iter_mut().map(|v| cap_strings(v, max)).sum(),
        Value::Object(object) => object.values_mut().map(|v| cap_strings(v, max)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call() -> LlmCall {
        let mut call = LlmCall::new("openai", "chat");
        call.set(attr::REQUEST_MODEL, "gpt-4o");
        call.set(
            attr::INPUT_MESSAGES,
            json!([{"role": "user", "parts": [{"type": "text", "content": "secret plan ✓"}]}]),
        );
        call.set(
            attr::OUTPUT_MESSAGES,
            json!([{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1",
                "name": "lookup", "arguments": {"q": "x"}}], "finish_reason": "tool_call"}]),
        );
        call.set(
            attr::TOOL_DEFINITIONS,
            json!([{"type": "function", "name": "lookup"}]),
        );
        call
    }

    fn options(mode: ContentMode, max_string_bytes: usize) -> ContentOptions {
        ContentOptions {
            mode,
            max_string_bytes,
        }
    }

    #[test]
    fn full_keeps_everything_under_the_cap() {
        let mut c = call();
        let before = c.attributes.clone();
        apply(&mut c, ContentOptions::default());
        assert_eq!(c.attributes, before);
    }

    #[test]
    fn redacted_keeps_structure_lengths_and_hashes_only() {
        let mut c = call();
        apply(&mut c, options(ContentMode::Redacted, 1000));
        let text = serde_json::to_string(&c.attributes).unwrap();
        assert!(!text.contains("secret plan"), "{text}");
        let input = &c.attribute(attr::INPUT_MESSAGES).unwrap()[0]["parts"][0];
        assert_eq!(input["type"], "text");
        let content = input["content"].as_str().unwrap();
        assert!(
            content.starts_with("[redacted: 15 bytes, sha256 "),
            "{content}"
        );
        let output = &c.attribute(attr::OUTPUT_MESSAGES).unwrap()[0]["parts"][0];
        assert_eq!(output["name"], "lookup");
        assert!(
            output["arguments"]
                .as_str()
                .unwrap()
                .starts_with("[redacted: 9 bytes")
        );
        // Equal texts redact alike.
        let mut again = call();
        apply(&mut again, options(ContentMode::Redacted, 1000));
        assert_eq!(again.attributes, c.attributes);
    }

    #[test]
    fn none_keeps_metadata_only() {
        let mut c = call();
        apply(&mut c, options(ContentMode::None, 1000));
        for key in [
            attr::INPUT_MESSAGES,
            attr::OUTPUT_MESSAGES,
            attr::TOOL_DEFINITIONS,
        ] {
            assert!(c.attribute(key).is_none(), "{key}");
        }
        assert_eq!(c.attribute(attr::REQUEST_MODEL), Some(&json!("gpt-4o")));
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary_with_a_marker() {
        let mut c = call();
        apply(&mut c, options(ContentMode::Full, 12));
        let content = c.attribute(attr::INPUT_MESSAGES).unwrap()[0]["parts"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        // "secret plan ✓" is 15 bytes; the check mark starts at byte 12.
        assert_eq!(content, "secret plan …[truncated 3 bytes]");
        assert_eq!(
            c.attribute(attr::OBSERVER_CONTENT_TRUNCATED_STRINGS),
            Some(&json!(1))
        );
    }
}
