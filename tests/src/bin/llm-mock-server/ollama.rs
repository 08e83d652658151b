//! Ollama's native API: `POST /api/chat`, `/api/generate` (streamed by default as NDJSON, one
//! JSON object a line, the last with `done: true`, the counts and durations) and `/api/embed`.
//! Responses carry no id and echo the requested model.

use serde_json::{Map, Value, json};

use super::{Body, Call, Provider, Response, Route, mock};

pub(crate) fn route(path: &str) -> Option<Route> {
    let handler = match path {
        "/api/chat" => chat,
        "/api/generate" => generate,
        "/api/embed" => embed,
        _ => return None,
    };
    Some(Route::new(Provider::Ollama, handler))
}

const CREATED_AT: &str = "2025-06-15T12:00:00.123456789Z";

/// The fields of the last line (or the whole response): why it stopped, counts, durations (ns).
fn done_fields(c: &Call, output_tokens: u64) -> Map<String, Value> {
    let fields = json!({"done_reason": "stop", "done": true, "total_duration": 912_345_678u64,
        "load_duration": 12_345_678u64, "prompt_eval_count": c.input_tokens,
        "prompt_eval_duration": 45_678_901u64, "eval_count": output_tokens,
        "eval_duration": 812_345_678u64});
    fields.as_object().cloned().unwrap_or_default()
}

/// A response line (or whole response) holding `output` (`message` or `response`).
fn line(c: &Call, output: Map<String, Value>, done: Option<Map<String, Value>>) -> Value {
    let mut object = Map::new();
    object.insert("model".into(), json!(c.model));
    object.insert("created_at".into(), json!(CREATED_AT));
    object.extend(output);
    match done {
        Some(fields) => object.extend(fields),
        None => {
            object.insert("done".into(), json!(false));
        }
    }
    Value::Object(object)
}

fn respond(
    c: &Call,
    pieces: Vec<Map<String, Value>>,
    last: Map<String, Value>,
    done: Map<String, Value>,
) -> Response {
    if !c.stream {
        return c.json(line(c, last, Some(done)), None);
    }
    let mut lines: Vec<Value> = pieces.into_iter().map(|p| line(c, p, None)).collect();
    lines.push(line(c, empty_output(&last), Some(done)));
    let events = lines
        .iter()
        .map(|l| format!("{l}\n").into_bytes())
        .collect();
    c.stream_of("application/x-ndjson", Body::Events(events), None)
}

/// The final line's output field, emptied (the text came in the lines before).
fn empty_output(whole: &Map<String, Value>) -> Map<String, Value> {
    whole
        .iter()
        .map(|(key, value)| {
            let empty = match value {
                Value::String(_) => json!(""),
                Value::Object(message) => json!({"role": message.get("role"), "content": ""}),
                other => other.clone(),
            };
            (key.clone(), empty)
        })
        .collect()
}

fn output(key: &str, value: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(key.into(), value);
    map
}

fn chat(c: &Call) -> Response {
    let reply = c.reply();
    if let Some(name) = &c.tool {
        let args = c.tool_arguments.clone();
        let tokens = mock::output_tokens(&args.to_string());
        let message = json!({"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": name, "arguments": args}}]});
        // A tool call comes whole, in one line before the last.
        let pieces = vec![output("message", message.clone())];
        return respond(
            c,
            pieces,
            output("message", message),
            done_fields(c, tokens),
        );
    }
    let pieces = mock::deltas(&reply)
        .into_iter()
        .map(|piece| output("message", json!({"role": "assistant", "content": piece})))
        .collect();
    let whole = output("message", json!({"role": "assistant", "content": reply}));
    respond(
        c,
        pieces,
        whole,
        done_fields(c, mock::output_tokens(&reply)),
    )
}

fn generate(c: &Call) -> Response {
    let reply = c.reply();
    let pieces = mock::deltas(&reply)
        .into_iter()
        .map(|piece| output("response", json!(piece)))
        .collect();
    let mut done = done_fields(c, mock::output_tokens(&reply));
    done.insert("context".into(), json!([128006, 882, 128007]));
    respond(c, pieces, output("response", json!(reply)), done)
}

fn embed(c: &Call) -> Response {
    let inputs: Vec<String> = match &c.body["input"] {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        other => vec![other.as_str().unwrap_or_default().to_owned()],
    };
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|text| mock::embedding(text)).collect();
    c.json(
        json!({"model": c.model, "embeddings": embeddings, "total_duration": 14_143_917u64,
            "load_duration": 1_019_500u64, "prompt_eval_count": c.input_tokens}),
        None,
    )
}
