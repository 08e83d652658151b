//! OpenAI Embeddings and legacy Completions, and what is not an LLM call.
use serde_json::json;

use super::support::*;
use crate::llm::attr;

#[test]
fn embeddings() {
    let request = json!({"model": "text-embedding-3-small", "input": ["hello", "world"],
                         "dimensions": 256, "encoding_format": "float"});
    let response = json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093]},
                 {"object": "embedding", "index": 1, "embedding": [0.0011, 0.0042]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2}
    });
    let call = recognised(&json_exchange(
        "api.openai.com",
        "/v1/embeddings",
        &request,
        200,
        &response,
    ));

    assert_eq!(call.operation, "embeddings");
    assert_eq!(get(&call, attr::OPERATION_NAME), &json!("embeddings"));
    assert_eq!(
        get(&call, attr::REQUEST_MODEL),
        &json!("text-embedding-3-small")
    );
    assert_eq!(get(&call, attr::EMBEDDINGS_DIMENSION_COUNT), &json!(256));
    assert_eq!(
        get(&call, attr::REQUEST_ENCODING_FORMATS),
        &json!(["float"])
    );
    assert_eq!(
        get(&call, attr::RESPONSE_MODEL),
        &json!("text-embedding-3-small")
    );
    assert_eq!(get(&call, attr::USAGE_INPUT_TOKENS), &json!(2));
    assert_eq!(get(&call, attr::OBSERVER_USAGE_SOURCE), &json!("reported"));
    for absent in [
        attr::REQUEST_STREAM,
        attr::OUTPUT_MESSAGES,
        attr::USAGE_OUTPUT_TOKENS,
    ] {
        assert_eq!(call.attribute(absent), None, "{absent}");
    }
}

fn completion_request(stream: bool) -> serde_json::Value {
    json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7,
           "temperature": 0, "stop": ["\n"], "stream": stream})
}

#[test]
fn legacy_completion_json() {
    let response = json!({
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7", "object": "text_completion", "created": 1589478378,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": "\n\nThis is indeed a test", "index": 0, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    });
    let call = recognised(&json_exchange(
        "api.openai.com",
        "/v1/completions",
        &completion_request(false),
        200,
        &response,
    ));

    assert_eq!(call.operation, "text_completion");
    assert_eq!(get(&call, attr::REQUEST_MAX_TOKENS), &json!(7));
    assert_eq!(get(&call, attr::REQUEST_STOP_SEQUENCES), &json!(["\n"]));
    assert_eq!(
        get(&call, attr::RESPONSE_ID),
        &json!("cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7")
    );
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["length"])
    );
    assert_eq!(get(&call, attr::USAGE_OUTPUT_TOKENS), &json!(7));
    assert_eq!(
        get(&call, attr::INPUT_MESSAGES),
        &json!([{"role": "user", "parts": [{"type": "text", "content": "Say this is a test"}]}])
    );
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [{"type": "text", "content": "\n\nThis is indeed a test"}], "finish_reason": "length"}])
    );
}

pub fn legacy_completion_stream() -> String {
    let chunk = |text: &str, finish: serde_json::Value| {
        json!({"id": "cmpl-7iA7", "object": "text_completion", "created": 1690759702, "model": "gpt-3.5-turbo-instruct",
               "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
    };
    let mut body = sse(&[
        (None, chunk("\n\n", json!(null))),
        (None, chunk("This is", json!(null))),
        (None, chunk(" indeed a test", json!(null))),
        (None, chunk("", json!("length"))),
    ]);
    body.push_str("data: [DONE]\n\n");
    body
}

#[test]
fn legacy_completion_stream_reassembles_text() {
    let exchange = sse_exchange(
        "api.openai.com",
        "/v1/completions",
        &completion_request(true),
        &legacy_completion_stream(),
    );
    let call = recognised(&exchange);

    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [{"type": "text", "content": "\n\nThis is indeed a test"}], "finish_reason": "length"}])
    );
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["length"])
    );
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(4));
    assert_eq!(
        get(&call, attr::RESPONSE_TIME_TO_FIRST_CHUNK),
        &json!(part_time(0))
    );
    assert_eq!(get(&call, attr::OBSERVER_USAGE_SOURCE), &json!("estimated"));
}

#[test]
fn other_requests_are_not_llm_calls() {
    let mut get_response = post("api.openai.com", "/v1/responses", &json!({}));
    get_response.request.method = "GET".into();
    let mut files_elsewhere = post("example.com", "/v1/files", &json!({}));
    files_elsewhere
        .request
        .headers
        .0
        .retain(|(name, _)| name != "Authorization");
    for exchange in [
        get_response,
        files_elsewhere,
        post("example.com", "/api/files/models", &json!({})),
        post(
            "api.anthropic.com",
            "/v1/messages/count_tokens",
            &json!({"model": "claude-sonnet-4-5", "messages": []}),
        ),
        post(
            "api.anthropic.com",
            "/v1/messages/batches",
            &json!({"requests": []}),
        ),
        post("example.com", "/index.html", &json!({})),
    ] {
        assert_eq!(
            recognise(&exchange),
            None,
            "{} {}",
            exchange.request.method,
            exchange.request.target
        );
    }
}
