//! The mock model: every reply, token count and tool call is a pure function of the request,
//! so the server (src/bin/llm-mock-server.rs) and the tests compute the same values.

use serde_json::{Value, json};

/// The API key every client sends. It must never appear in anything the observer writes.
pub const CANARY_API_KEY: &str = "sk-canary-4f1d9a7e";

/// Magic words in the last user message that switch the server's behaviour.
pub mod scenario {
    /// A streamed reply over 64 KiB.
    pub const BIG: &str = "[big]";
    /// HTTP 429 with the provider's real error body and retry-after headers.
    pub const RATE_LIMIT: &str = "[429]";
    /// Each SSE event is written in two halves, flushed separately with a pause between them.
    pub const SPLIT: &str = "[split]";
    /// All SSE events of the response are written in one single write.
    pub const MERGE: &str = "[merge]";
    /// A stream that sends one event every `SLOW_EVENT_INTERVAL_MS` for a long time.
    pub const SLOW: &str = "[slow]";
    /// A gzip-compressed JSON body when the client sends `Accept-Encoding: gzip`.
    pub const GZIP: &str = "[gzip]";
    /// Reply with a tool call to the first tool of the request (also triggered by `tools`
    /// being present in the request).
    pub const TOOL: &str = "[tool]";
    /// A stream cut off half-way: the connection (HTTP/1.1) or stream (HTTP/2) is aborted.
    pub const CUT: &str = "[cut]";
    /// HTTP 500 with the provider's error body.
    pub const SERVER_ERROR: &str = "[500]";
    /// In the conversation's first user message: an agent's turn. The reply calls the first tool
    /// the request offers (with `tool_arguments`) until a tool result comes back, then answers
    /// with text.
    pub const ONCE: &str = "[once]";
    /// As `ONCE`, the tool called being a shell: `Bash` with `{"command": BASH_COMMAND}`.
    pub const BASH: &str = "[bash]";
    /// As `ONCE`, the tool called being the first MCP tool the request offers (named
    /// `mcp__SERVER__TOOL`, as the Claude Code CLI names them).
    pub const MCP: &str = "[mcp]";
    /// As `BASH`, the command being the rest of the first user message after this word (a
    /// program that is itself an agent: a sub-agent).
    pub const SUB_AGENT: &str = "[subagent]";
    /// The command `BASH` asks for: prints, then fails with exit code 3.
    pub const BASH_COMMAND: &str = "echo hi from the mock; exit 3";

    pub const SLOW_EVENT_INTERVAL_MS: u64 = 250;
    pub const SLOW_EVENT_COUNT: usize = 240;
}

/// Models whose name starts with this are not found (HTTP 404 in the provider's format).
pub const MISSING_MODEL_PREFIX: &str = "missing-";

/// The minimum size of the `[big]` reply text.
pub const BIG_REPLY_MIN_BYTES: usize = 80 * 1024;

/// The model name the response carries for a requested model (like a dated snapshot).
pub fn response_model(request_model: &str) -> String {
    format!("{request_model}-2025-01-01")
}

pub fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn first_words(text: &str, n: usize) -> String {
    text.split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The assistant's reply to `prompt`. Contains quotes, a newline and non-ASCII characters on
/// purpose, so a consumer has to decode JSON string escapes properly.
pub fn reply_text(prompt: &str) -> String {
    if prompt.contains(scenario::BIG) {
        let mut text = String::from("Big reply:");
        let mut i = 0u32;
        while text.len() < BIG_REPLY_MIN_BYTES {
            text.push_str(&format!(" w{i}"));
            i += 1;
        }
        text.push_str(" end.");
        return text;
    }
    if prompt.contains(scenario::SLOW) {
        return (0..scenario::SLOW_EVENT_COUNT)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ");
    }
    format!(
        "Mock reply to \"{}\" ({} words) ✓\nDone.",
        first_words(prompt, 8),
        count_words(prompt)
    )
}

/// Output tokens for a reply: its number of words.
pub fn output_tokens(reply: &str) -> u64 {
    count_words(reply)
}

/// Arguments of the tool call the server makes for `prompt` (a JSON object).
pub fn tool_arguments(prompt: &str) -> Value {
    json!({ "query": first_words(prompt, 6), "limit": count_words(prompt), "units": "metric" })
}

/// The tool call the reply to `request` makes, if any: its name and arguments. `prompt` is the
/// last user message's text.
pub fn tool_call(request: &Value, prompt: &str) -> Option<(String, Value)> {
    let first = first_user_text(request);
    let agent_turn = [
        scenario::ONCE,
        scenario::BASH,
        scenario::MCP,
        scenario::SUB_AGENT,
    ]
    .iter()
    .any(|word| first.contains(word));
    if agent_turn && carries_tool_result(request) {
        return None;
    }
    if first.contains(scenario::BASH) {
        let arguments =
            json!({"command": scenario::BASH_COMMAND, "description": "Greet, then fail"});
        return Some(("Bash".to_owned(), arguments));
    }
    if let Some((_, command)) = first.split_once(scenario::SUB_AGENT) {
        let arguments = json!({"command": command.trim(), "description": "Delegate"});
        return Some(("Bash".to_owned(), arguments));
    }
    if first.contains(scenario::MCP) {
        let tools = request.get("tools").and_then(Value::as_array);
        let name = tools
            .into_iter()
            .flatten()
            .filter_map(|tool| tool.get("name")?.as_str())
            .find(|name| name.starts_with("mcp__"))?;
        return Some((name.to_owned(), tool_arguments(prompt)));
    }
    first_tool_name(request)
        .or_else(|| prompt.contains(scenario::TOOL).then(|| "lookup".to_owned()))
        .map(|name| (name, tool_arguments(prompt)))
}

/// The text of the conversation's first user message.
fn first_user_text(request: &Value) -> String {
    request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// Whether the request sends a tool's result back: an OpenAI `tool` message or an Anthropic
/// `tool_result` block.
fn carries_tool_result(request: &Value) -> bool {
    let messages = request.get("messages").and_then(Value::as_array);
    messages.into_iter().flatten().any(|message| {
        message.get("role").and_then(Value::as_str) == Some("tool")
            || message
                .get("content")
                .and_then(Value::as_array)
                .is_some_and(|parts| {
                    parts
                        .iter()
                        .any(|part| part.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
    })
}

/// The text the model says before a tool call (Anthropic replies carry one).
pub fn tool_preamble(tool_name: &str) -> String {
    format!("Calling {tool_name} now.")
}

/// How a reply is cut into stream deltas: groups of words, keeping the whitespace, so that
/// concatenating the deltas gives back the reply exactly.
pub fn deltas(text: &str) -> Vec<String> {
    let words_per_delta = if text.len() > 4096 { 50 } else { 3 };
    let mut out = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for (i, ch) in text.char_indices() {
        current.push(ch);
        let next_is_space = text[i + ch.len_utf8()..]
            .chars()
            .next()
            .is_some_and(char::is_whitespace);
        if !ch.is_whitespace() && (next_is_space) {
            words += 1;
            if words == words_per_delta {
                out.push(std::mem::take(&mut current));
                words = 0;
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// How a tool call's JSON arguments are cut into streamed fragments.
pub fn argument_fragments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    chars.chunks(7).map(|c| c.iter().collect()).collect()
}

/// Collects the text of a message `content` (a string, or an array of parts with `text`).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The name of the first tool a request offers, in any provider's shape: OpenAI
/// (`tools[].function.name`), Anthropic and Ollama (`tools[].name`), Gemini
/// (`tools[].functionDeclarations[].name`), Bedrock (`toolConfig.tools[].toolSpec.name`).
pub fn first_tool_name(request: &Value) -> Option<String> {
    let tool = request
        .get("tools")
        .or_else(|| request.pointer("/toolConfig/tools"))?
        .get(0)?;
    [
        "/function/name",
        "/name",
        "/functionDeclarations/0/name",
        "/toolSpec/name",
    ]
    .iter()
    .find_map(|pointer| tool.pointer(pointer))
    .and_then(Value::as_str)
    .map(str::to_owned)
}

/// The text of the last user message (chat / messages / responses input / completion prompt /
/// embeddings input / Gemini contents): what the reply is computed from.
pub fn prompt_of(request: &Value) -> String {
    if let Some(contents) = request.get("contents").and_then(Value::as_array) {
        return contents
            .iter()
            .rev()
            .find(|c| c.get("role").is_none_or(|role| role == "user"))
            .and_then(|c| c.get("parts"))
            .map(content_text)
            .unwrap_or_default();
    }
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        return messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .map(content_text)
            .unwrap_or_default();
    }
    for key in ["input", "prompt"] {
        match request.get(key) {
            Some(Value::String(s)) => return s.clone(),
            Some(Value::Array(items)) => {
                return items
                    .iter()
                    .rev()
                    .find_map(|item| match item {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(_)
                            if item.get("role").and_then(Value::as_str) == Some("user") =>
                        {
                            item.get("content").map(content_text)
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    String::new()
}

/// Input tokens of a request: the words of every string under its prompt-bearing fields.
pub fn input_tokens(request: &Value) -> u64 {
    fn words_in(v: &Value) -> u64 {
        match v {
            Value::String(s) => count_words(s),
            Value::Array(a) => a.iter().map(words_in).sum(),
            Value::Object(o) => o.values().map(words_in).sum(),
            _ => 0,
        }
    }
    [
        "messages",
        "input",
        "prompt",
        "system",
        "instructions",
        "contents",
        "systemInstruction",
    ]
    .iter()
    .filter_map(|k| request.get(*k))
    .map(words_in)
    .sum()
}

/// Deterministic embedding vector for one input text.
pub fn embedding(text: &str) -> Vec<f32> {
    let words = count_words(text) as f32;
    (0..8)
        .map(|i| ((text.len() as f32 + i as f32 * 7.0 + words) % 17.0) / 17.0 - 0.5)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_concatenate_to_the_reply() {
        for prompt in ["hello there world, how are you", "[big] please"] {
            let reply = reply_text(prompt);
            let parts = deltas(&reply);
            assert!(parts.len() > 2);
            assert_eq!(parts.concat(), reply);
        }
        assert!(reply_text("[big]").len() >= BIG_REPLY_MIN_BYTES);
    }

    #[test]
    fn prompt_and_tokens() {
        let req = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two three"}]}
        ]});
        assert_eq!(prompt_of(&req), "one two three");
        // Every string counts: roles, part types and texts.
        assert_eq!(input_tokens(&req), (1 + 2) + (1 + 1 + 3));
        assert_eq!(prompt_of(&json!({"input": "a b"})), "a b");
        assert_eq!(
            prompt_of(&json!({"input": [{"role": "user", "content": "x y z"}]})),
            "x y z"
        );
    }

    #[test]
    fn an_agent_turn_calls_its_tool_once_then_answers() {
        let tools = json!([{"name": "Bash"}, {"name": "Read"}]);
        let ask = json!({"tools": tools, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "go [bash]"}]}]});
        let (name, arguments) = tool_call(&ask, "go [bash]").expect("a tool call");
        assert_eq!(name, "Bash");
        assert_eq!(arguments["command"], scenario::BASH_COMMAND);
        let answered = json!({"tools": tools, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "go [bash]"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "hi"}]}]});
        assert_eq!(tool_call(&answered, ""), None);
        // Without the scenario, tools offered are called every time, as before.
        let plain =
            json!({"tools": [{"name": "lookup"}], "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(
            tool_call(&plain, "x").map(|t| t.0).as_deref(),
            Some("lookup")
        );
    }

    #[test]
    fn argument_fragments_rejoin() {
        let args = tool_arguments("what is the weather in Paris").to_string();
        assert_eq!(argument_fragments(&args).concat(), args);
    }
}
