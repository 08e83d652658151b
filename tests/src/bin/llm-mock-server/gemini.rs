//! The Gemini API (`generativelanguage.googleapis.com`) and Vertex AI's path shape:
//! `POST …/models/{model}:generateContent` (JSON) and `:streamGenerateContent` (SSE with
//! `?alt=sse`, each event a whole `GenerateContentResponse` holding the next text; without it,
//! a JSON array streamed element by element). The model is named only in the URL.

use serde_json::{Value, json};

use super::{Body, Call, Provider, Response, Route, mock};

pub(crate) fn route(path: &str) -> Option<Route> {
    let (_, rest) = path.rsplit_once("/models/")?;
    let (model, method) = rest.split_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    Some(Route {
        model: Some(model.to_owned()),
        stream: Some(stream),
        ..Route::new(Provider::Gemini, generate)
    })
}

fn generate(c: &Call) -> Response {
    let id = format!("gmock{:06}", c.n);
    let model_version = c.response_model();
    let reply = c.reply();
    let tool_args = c.tool.as_ref().map(|_| c.tool_arguments.clone());
    let output_tokens = match &tool_args {
        Some(args) => mock::output_tokens(&args.to_string()),
        None => mock::output_tokens(&reply),
    };
    let usage = |output: Option<u64>| {
        let mut usage = json!({"promptTokenCount": c.input_tokens,
            "totalTokenCount": c.input_tokens + output.unwrap_or(0),
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": c.input_tokens}]});
        if let Some(output) = output {
            usage["candidatesTokenCount"] = json!(output);
        }
        usage
    };
    let response = |parts: Value, finish: Option<&str>, usage: Value| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(finish) = finish {
            candidate["finishReason"] = json!(finish);
        }
        json!({"candidates": [candidate], "usageMetadata": usage,
            "modelVersion": model_version, "responseId": id})
    };
    let call_part = |args: &Value| {
        let name = c.tool.as_deref().unwrap_or_default();
        json!([{"functionCall": {"name": name, "args": args}}])
    };
    if !c.stream {
        let parts = match &tool_args {
            Some(args) => call_part(args),
            None => json!([{ "text": reply }]),
        };
        return c.json(
            response(parts, Some("STOP"), usage(Some(output_tokens))),
            Some(id),
        );
    }
    // Usage rides on every chunk; the output count and the finish reason on the last.
    let chunks: Vec<Value> = match &tool_args {
        Some(args) => vec![response(
            call_part(args),
            Some("STOP"),
            usage(Some(output_tokens)),
        )],
        None => {
            let pieces = mock::deltas(&reply);
            let last = pieces.len() - 1;
            pieces
                .iter()
                .enumerate()
                .map(|(i, piece)| {
                    let done = i == last;
                    response(
                        json!([{ "text": piece }]),
                        done.then_some("STOP"),
                        usage(done.then_some(output_tokens)),
                    )
                })
                .collect()
        }
    };
    let sse = c.request.path.contains("alt=sse");
    let events: Vec<Vec<u8>> = if sse {
        // Google ends its SSE lines with CRLF.
        chunks
            .iter()
            .map(|chunk| format!("data: {chunk}\r\n\r\n").into_bytes())
            .collect()
    } else {
        let last = chunks.len() - 1;
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let open = if i == 0 { "[" } else { ",\r\n" };
                let close = if i == last { "]" } else { "" };
                format!(
                    "{open}{}{close}",
                    serde_json::to_string_pretty(chunk).unwrap_or_default()
                )
                .into_bytes()
            })
            .collect()
    };
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json; charset=UTF-8"
    };
    c.stream_of(content_type, Body::Events(events), Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_gemini_and_vertex_paths() {
        let r = route("/v1beta/models/gemini-2.5-flash:streamGenerateContent").unwrap();
        assert_eq!(r.model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(r.stream, Some(true));
        let vertex = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent";
        assert_eq!(route(vertex).unwrap().stream, Some(false));
        assert!(route("/v1beta/models/gemini-2.5-flash:countTokens").is_none());
    }
}
