//! Cohere v2 chat: the JSON response and the SSE stream (`message-start`, `content-delta`,
//! `tool-plan-delta`, `tool-call-*`, `message-end`), with wire bodies as the API sends them.
use serde_json::json;

use super::support::*;
use crate::llm::attr;

fn request(stream: bool) -> serde_json::Value {
    json!({"model": "command-a-03-2025", "stream": stream, "temperature": 0.3, "p": 0.9,
        "max_tokens": 200, "stop_sequences": ["END"],
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "response_format": {"type": "json_object"}})
}

fn assert_request_read(call: &crate::llm::LlmCall, stream: bool) {
    assert_eq!(call.provider, "cohere");
    assert_eq!(get(call, attr::REQUEST_MODEL), &json!("command-a-03-2025"));
    assert_eq!(get(call, attr::REQUEST_STREAM), &json!(stream));
    assert_eq!(get(call, attr::REQUEST_TOP_P), &json!(0.9));
    assert_eq!(get(call, attr::REQUEST_STOP_SEQUENCES), &json!(["END"]));
    assert_eq!(get(call, attr::OUTPUT_TYPE), &json!("json"));
    assert_eq!(
        get(call, attr::INPUT_MESSAGES)[1],
        json!({"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]})
    );
    assert_eq!(
        get(call, attr::TOOL_DEFINITIONS)[0]["name"],
        json!("get_weather")
    );
}

#[test]
fn chat_json_with_a_tool_plan_and_a_tool_call() {
    let response = json!({"id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "finish_reason": "TOOL_CALL",
        "message": {"role": "assistant", "tool_plan": "I will look up the weather.",
            "tool_calls": [{"id": "get_weather_1byjy32y4hvq", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        "usage": {"billed_units": {"input_tokens": 17, "output_tokens": 9},
                  "tokens": {"input_tokens": 980, "output_tokens": 31}}});
    let call = recognised(&json_exchange(
        "api.cohere.com",
        "/v2/chat",
        &request(false),
        200,
        &response,
    ));
    assert_request_read(&call, false);
    assert_eq!(
        get(&call, attr::RESPONSE_ID),
        &json!("c14c80c3-18eb-4519-9460-6c92edd8cfb4")
    );
    // Actual token counts win over billed ones.
    assert_eq!(get(&call, attr::USAGE_INPUT_TOKENS), &json!(980));
    assert_eq!(get(&call, attr::USAGE_OUTPUT_TOKENS), &json!(31));
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["TOOL_CALL"])
    );
    let parts = &get(&call, attr::OUTPUT_MESSAGES)[0]["parts"];
    assert_eq!(
        parts[0],
        json!({"type": "reasoning", "content": "I will look up the weather."})
    );
    assert_eq!(parts[1]["type"], json!("tool_call"));
    assert_eq!(parts[1]["id"], json!("get_weather_1byjy32y4hvq"));
    assert_eq!(parts[1]["arguments"], json!({"city": "Paris"}));
}

fn stream_body() -> String {
    let events = [
        json!({"type": "message-start", "id": "29f14a5a-11de-4cae-9800-25e4747408ea",
            "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "",
                "tool_calls": [], "citations": []}}}),
        json!({"type": "content-start", "index": 0,
            "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
        json!({"type": "content-delta", "index": 0,
            "delta": {"message": {"content": {"text": "It is "}}}}),
        json!({"type": "content-delta", "index": 0,
            "delta": {"message": {"content": {"text": "sunny ✓"}}}}),
        json!({"type": "content-end", "index": 0}),
        json!({"type": "message-end", "delta": {"finish_reason": "COMPLETE",
            "usage": {"billed_units": {"input_tokens": 9, "output_tokens": 3},
                      "tokens": {"input_tokens": 75, "output_tokens": 5}}}}),
    ];
    // Cohere names each event in an `event:` line too.
    typed_sse(&events)
}

#[test]
fn chat_stream_in_any_split_reads_alike() {
    let stream = stream_body();
    let exchange = sse_exchange("api.cohere.com", "/v2/chat", &request(true), &stream);
    let call = recognised(&exchange);
    assert_request_read(&call, true);
    assert_eq!(
        get(&call, attr::RESPONSE_ID),
        &json!("29f14a5a-11de-4cae-9800-25e4747408ea")
    );
    assert_eq!(get(&call, attr::USAGE_INPUT_TOKENS), &json!(75));
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["COMPLETE"])
    );
    let output = &get(&call, attr::OUTPUT_MESSAGES)[0];
    assert_eq!(
        output["parts"],
        json!([{"type": "text", "content": "It is sunny ✓"}])
    );
    assert_eq!(
        get(&call, attr::OBSERVER_STREAM_OUTPUT_CHUNK_COUNT),
        &json!(2)
    );
    let per_chunk = get(&call, attr::RESPONSE_TIME_PER_OUTPUT_CHUNK).as_f64();
    assert!(per_chunk.is_some_and(|t| (t - (part_time(3) - part_time(2))).abs() < 1e-9));
    assert!(call.attribute(attr::ERROR_TYPE).is_none());
    for cut in 1..stream.len() {
        let body = body_in_parts(&stream, &[cut]);
        let resplit = recognised(&answer(
            post("api.cohere.com", "/v2/chat", &request(true)),
            200,
            "text/event-stream",
            body,
        ));
        assert_eq!(timeless(&resplit), timeless(&call), "cut at {cut}");
    }
}

#[test]
fn a_stream_cut_before_message_end_keeps_what_arrived() {
    let stream = stream_body();
    let cut = stream
        .find("event: content-end")
        .expect("content-end event");
    let call = recognised(&sse_exchange(
        "api.cohere.com",
        "/v2/chat",
        &request(true),
        &stream[..cut],
    ));
    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("stream_interrupted"));
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["error"]));
    let output = &get(&call, attr::OUTPUT_MESSAGES)[0];
    assert_eq!(output["parts"][0]["content"], json!("It is sunny ✓"));
}
