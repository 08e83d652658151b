//! Chat Completions (`…/chat/completions`) and legacy Completions (`…/completions`): one
//! envelope of `choices`, whose output is in `message` / `delta` (chat) or `text` (legacy).
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{record_output_type, record_usage, record_usage_report};
use crate::http::Body;
use crate::llm::error::ProviderError;
use crate::llm::exchange::{ApiReader, record_identity, record_response_names};
use crate::llm::json::{JsonStr, array_at, str_at, u64_at};
use crate::llm::otel::{
    content_parts, input_message, output_message, parse_arguments, reasoning_part, text_block_part,
    text_part, tool_call_part, tool_call_response_part, tool_definition,
};
use crate::llm::params::{record_model, record_numbers, record_stop_sequences, record_stream};
use crate::llm::stream::{Seen, StreamSummary, read_sse_text};
use crate::llm::{LlmCall, attr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChoicesApi {
    Chat,
    Legacy,
}

const NUMERIC_PARAMS: &[(&str, &str)] = &[
    ("temperature", attr::REQUEST_TEMPERATURE),
    ("top_p", attr::REQUEST_TOP_P),
    ("max_tokens", attr::REQUEST_MAX_TOKENS),
    ("max_completion_tokens", attr::REQUEST_MAX_TOKENS),
    ("frequency_penalty", attr::REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", attr::REQUEST_PRESENCE_PENALTY),
    ("seed", attr::REQUEST_SEED),
];

impl ApiReader for ChoicesApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        record_stream(call, request);
        record_numbers(call, request, NUMERIC_PARAMS);
        record_stop_sequences(call, request.get("stop"));
        if let Some(count) = u64_at(request, "n").filter(|&n| n != 1) {
            call.set(attr::REQUEST_CHOICE_COUNT, count);
        }
        match self {
            ChoicesApi::Chat => {
                record_chat_messages(call, request, message_parts);
                record_output_type(call, request.get("response_format"));
            }
            ChoicesApi::Legacy => {
                call.set_list(attr::INPUT_MESSAGES, prompt_messages(request.get("prompt")));
            }
        }
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        record_usage(call, response);
        self.record_choices(call, array_at(response, "choices"));
    }

    fn read_stream_response(&self, call: &mut LlmCall, body: &Body) -> Option<StreamSummary> {
        let mut drafts = BTreeMap::<u64, ChoiceDraft>::new();
        let summary = read_sse_text(body, |_, data| {
            let mut value = None;
            let Some(chunk) = Chunk::parse(data, &mut value) else {
                return Seen::NOTHING; // not JSON
            };
            if let Some(error) = ProviderError::from_member(chunk.error.as_ref()) {
                error.record(call, "stream_error");
                return Seen::NOTHING;
            }
            record_response_names(call, chunk.id.as_deref(), chunk.model.as_deref());
            // Only with `stream_options.include_usage`: a last chunk with no choices.
            record_usage_report(call, chunk.usage.as_ref());
            let mut output = false;
            for choice in &chunk.choices {
                let index = choice.index.unwrap_or(0);
                output |= drafts.entry(index).or_default().absorb(*self, choice);
            }
            Seen::output(output)
        });
        let choices: Vec<Value> = drafts
            .into_iter()
            .map(|(index, draft)| draft.into_choice(*self, index))
            .collect();
        self.record_choices(call, &choices);
        Some(summary)
    }
}

impl ChoicesApi {
    /// Finish reasons and output messages, from response choices or reassembled stream ones.
    fn record_choices(self, call: &mut LlmCall, choices: &[Value]) {
        let finish_reasons = choices
            .iter()
            .filter_map(|choice| str_at(choice, "finish_reason"))
            .map(Value::from);
        call.set_list(attr::RESPONSE_FINISH_REASONS, finish_reasons.collect());
        let messages = choices.iter().map(|choice| self.output_message(choice));
        call.set_list(attr::OUTPUT_MESSAGES, messages.collect());
    }

    fn output_message(self, choice: &Value) -> Value {
        let finish_reason = str_at(choice, "finish_reason");
        match self {
            ChoicesApi::Chat => {
                let message = choice.get("message");
                let role = message
                    .and_then(|m| str_at(m, "role"))
                    .unwrap_or("assistant");
                let parts = message.map(message_parts).unwrap_or_default();
                output_message(role, parts, finish_reason)
            }
            ChoicesApi::Legacy => {
                let parts = content_parts(choice.get("text"), text_block_part);
                output_message("assistant", parts, finish_reason)
            }
        }
    }
}

/// Fields that carry reasoning beside the content: DeepSeek's and vLLM's `reasoning_content`,
/// OpenRouter's and newer vLLM's `reasoning`, Ollama's `thinking`.
const REASONING_FIELDS: &[&str] = &["reasoning_content", "reasoning", "thinking"];

/// A Chat Completions message (request `messages[]`, response `choices[].message`, or one
/// reassembled from a stream) as OTel parts. Also read for the APIs that copy its message
/// shape (Ollama, Cohere).
/// The Chat Completions request's `messages` (each read into parts by `parts`) and `tools`,
/// a shape Cohere and Ollama copy.
pub(crate) fn record_chat_messages(
    call: &mut LlmCall,
    request: &Value,
    parts: fn(&Value) -> Vec<Value>,
) {
    let messages = array_at(request, "messages")
        .iter()
        .map(|message| input_message(str_at(message, "role").unwrap_or("user"), parts(message)));
    call.set_list(attr::INPUT_MESSAGES, messages.collect());
    let tools = array_at(request, "tools").iter().map(tool_definition_of);
    call.set_list(attr::TOOL_DEFINITIONS, tools.collect());
}

pub(crate) fn message_parts(message: &Value) -> Vec<Value> {
    let mut parts = Vec::new();
    let reasoning = REASONING_FIELDS
        .iter()
        .find_map(|field| str_at(message, field).filter(|r| !r.is_empty()));
    if let Some(reasoning) = reasoning {
        parts.push(reasoning_part(reasoning));
    }
    if str_at(message, "role") == Some("tool") {
        let response = message.get("content").cloned().unwrap_or_default();
        parts.push(tool_call_response_part(
            str_at(message, "tool_call_id"),
            response,
        ));
    } else {
        parts.extend(content_parts(message.get("content"), text_block_part));
    }
    parts.extend(array_at(message, "tool_calls").iter().map(tool_call_of));
    parts
}

/// Arguments are JSON text; Ollama sends them as an object.
fn tool_call_of(tool_call: &Value) -> Value {
    let function = tool_call.get("function");
    let arguments = match function.and_then(|f| f.get("arguments")) {
        Some(Value::String(text)) => parse_arguments(text),
        Some(object) => object.clone(),
        None => parse_arguments(""),
    };
    let name = function.and_then(|f| str_at(f, "name"));
    tool_call_part(str_at(tool_call, "id"), name, arguments)
}

pub(crate) fn tool_definition_of(tool: &Value) -> Value {
    let kind = str_at(tool, "type").unwrap_or("function");
    // The description sits under the tool's type: {"type": "function", "function": {...}}.
    tool_definition(kind, tool.get(kind).unwrap_or(tool), "parameters")
}

/// Legacy prompts: one string, or a batch of them (token-id prompts carry no text).
fn prompt_messages(prompt: Option<&Value>) -> Vec<Value> {
    let prompts: Vec<&str> = match prompt {
        Some(Value::String(one)) => vec![one],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let message = |text| input_message("user", vec![text_part(text)]);
    prompts.into_iter().map(message).collect()
}

/// One stream chunk, only the fields a span needs, its strings borrowed from the event where
/// JSON escapes allow ([`JsonStr`]). Serde reads the usual chunk straight from its text (no `Value` per
/// event: a stream has thousands); one it cannot (a field of another type, a repeated key) is
/// parsed as a `Value` and read by [`Chunk::from_value`], field by field, as leniently as a
/// whole response is.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<JsonStr<'a>>,
    #[serde(borrow)]
    model: Option<JsonStr<'a>>,
    usage: Option<Value>,
    error: Option<Value>,
    #[serde(borrow, default)]
    choices: Vec<ChoiceChunk<'a>>,
}

/// A chunk's piece of one choice: `delta` (chat) or `text` (legacy).
#[derive(Deserialize)]
struct ChoiceChunk<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    finish_reason: Option<JsonStr<'a>>,
    #[serde(borrow)]
    text: Option<JsonStr<'a>>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
}

/// The fields of [`REASONING_FIELDS`] are the three reasoning ones, kept in that order.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    role: Option<JsonStr<'a>>,
    #[serde(borrow)]
    content: Option<JsonStr<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<JsonStr<'a>>,
    #[serde(borrow)]
    reasoning: Option<JsonStr<'a>>,
    #[serde(borrow)]
    thinking: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    tool_calls: Vec<ToolCallChunk<'a>>,
}

#[derive(Deserialize)]
struct ToolCallChunk<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<JsonStr<'a>>,
    #[serde(borrow)]
    function: Option<FunctionChunk<'a>>,
}

#[derive(Deserialize)]
struct FunctionChunk<'a> {
    #[serde(borrow)]
    name: Option<JsonStr<'a>>,
    #[serde(borrow)]
    arguments: Option<JsonStr<'a>>,
}

fn str_of<'a>(value: &'a Value, key: &str) -> Option<JsonStr<'a>> {
    str_at(value, key).map(JsonStr::from)
}

impl<'a> Chunk<'a> {
    /// The chunk in `data`: read strictly, else through a `Value` (kept in `value`).
    fn parse(data: &'a str, value: &'a mut Option<Value>) -> Option<Chunk<'a>> {
        if let Ok(chunk) = serde_json::from_str(data) {
            return Some(chunk);
        }
        let value = value.insert(serde_json::from_str(data).ok()?);
        Some(Chunk::from_value(value))
    }

    fn from_value(chunk: &'a Value) -> Chunk<'a> {
        Chunk {
            id: str_of(chunk, "id"),
            model: str_of(chunk, "model"),
            usage: chunk.get("usage").cloned(),
            error: chunk.get("error").cloned(),
            choices: array_at(chunk, "choices")
                .iter()
                .map(ChoiceChunk::from_value)
                .collect(),
        }
    }
}

impl<'a> ChoiceChunk<'a> {
    fn from_value(choice: &'a Value) -> ChoiceChunk<'a> {
        ChoiceChunk {
            index: u64_at(choice, "index"),
            finish_reason: str_of(choice, "finish_reason"),
            text: str_of(choice, "text"),
            delta: choice.get("delta").map(Delta::from_value),
        }
    }
}

impl<'a> Delta<'a> {
    fn from_value(delta: &'a Value) -> Delta<'a> {
        Delta {
            role: str_of(delta, "role"),
            content: str_of(delta, "content"),
            reasoning_content: str_of(delta, REASONING_FIELDS[0]),
            reasoning: str_of(delta, REASONING_FIELDS[1]),
            thinking: str_of(delta, REASONING_FIELDS[2]),
            tool_calls: array_at(delta, "tool_calls")
                .iter()
                .map(ToolCallChunk::from_value)
                .collect(),
        }
    }

    fn reasoning_fields(&self) -> [Option<&str>; 3] {
        let [a, b, c] = [&self.reasoning_content, &self.reasoning, &self.thinking];
        [a.as_deref(), b.as_deref(), c.as_deref()]
    }
}

impl<'a> ToolCallChunk<'a> {
    fn from_value(fragment: &'a Value) -> ToolCallChunk<'a> {
        let function = fragment.get("function").map(|function| FunctionChunk {
            name: str_of(function, "name"),
            arguments: str_of(function, "arguments"),
        });
        ToolCallChunk {
            index: u64_at(fragment, "index"),
            id: str_of(fragment, "id"),
            function,
        }
    }
}

/// One choice being reassembled from stream chunks.
#[derive(Default)]
struct ChoiceDraft {
    role: Option<String>,
    content: String,
    reasoning: String,
    tool_calls: BTreeMap<u64, ToolCallDraft>,
    finish_reason: Option<String>,
}

#[derive(Default)]
struct ToolCallDraft {
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl ChoiceDraft {
    /// Folds in one chunk's piece of this choice; true if it carried output.
    fn absorb(&mut self, api: ChoicesApi, choice: &ChoiceChunk) -> bool {
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.to_string());
        }
        match (api, &choice.delta) {
            (ChoicesApi::Legacy, _) => push_fragment(&mut self.content, choice.text.as_deref()),
            (ChoicesApi::Chat, Some(delta)) => self.absorb_delta(delta),
            (ChoicesApi::Chat, None) => false,
        }
    }

    fn absorb_delta(&mut self, delta: &Delta) -> bool {
        if let Some(role) = &delta.role {
            self.role = Some(role.to_string());
        }
        let mut content = push_fragment(&mut self.content, delta.content.as_deref());
        for reasoning in delta.reasoning_fields() {
            content |= push_fragment(&mut self.reasoning, reasoning);
        }
        for fragment in &delta.tool_calls {
            content |= self.absorb_tool_call(fragment);
        }
        content
    }

    /// Tool-call arguments arrive in fragments; only the first carries the id and name.
    fn absorb_tool_call(&mut self, fragment: &ToolCallChunk) -> bool {
        let id = fragment.id.as_deref().filter(|id| !id.is_empty());
        let index = fragment
            .index
            .unwrap_or_else(|| self.unindexed_call(id.is_some()));
        let draft = self.tool_calls.entry(index).or_default();
        if let Some(id) = id {
            draft.id = Some(id.to_owned());
        }
        let function = fragment.function.as_ref();
        if let Some(name) = function
            .and_then(|f| f.name.as_deref())
            .filter(|n| !n.is_empty())
        {
            draft.name = Some(name.to_owned());
        }
        let arguments = function.and_then(|f| f.arguments.as_deref());
        push_fragment(&mut draft.arguments, arguments) || id.is_some()
    }

    /// Where a fragment without `index` goes (some compatible servers omit it): a new call
    /// when it brings an id, else the latest call.
    fn unindexed_call(&self, starts_call: bool) -> u64 {
        match self.tool_calls.keys().next_back() {
            Some(&last) if starts_call => last.saturating_add(1),
            Some(&last) => last,
            None => 0,
        }
    }

    /// The choice in the shape of a whole response's, so both are read by the same code.
    fn into_choice(self, api: ChoicesApi, index: u64) -> Value {
        match api {
            ChoicesApi::Legacy => {
                json!({"index": index, "text": self.content, "finish_reason": self.finish_reason})
            }
            ChoicesApi::Chat => {
                let tool_calls: Vec<Value> = self
                    .tool_calls
                    .into_values()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        })
                    })
                    .collect();
                json!({
                    "index": index,
                    "message": {
                        "role": self.role.as_deref().unwrap_or("assistant"),
                        "content": self.content,
                        "reasoning_content": self.reasoning,
                        "tool_calls": tool_calls,
                    },
                    "finish_reason": self.finish_reason,
                })
            }
        }
    }
}

/// Appends a non-empty stream fragment; true if there was one.
fn push_fragment(target: &mut String, fragment: Option<&str>) -> bool {
    match fragment {
        Some(fragment) if !fragment.is_empty() => {
            target.push_str(fragment);
            true
        }
        _ => false,
    }
}
