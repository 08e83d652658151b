//! Anthropic Messages: JSON and streamed, with thinking, tool use and tool results.
use serde_json::{Value, json};

use super::support::*;
use crate::llm::attr;

const HOST: &str = "api.anthropic.com";
const PATH: &str = "/v1/messages";

fn request(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C, sunny"}]}
        ],
        "tools": [{"name": "get_forecast", "description": "Forecast for a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}],
        "temperature": 0.7,
        "top_p": 0.95,
        "top_k": 40,
        "stop_sequences": ["\n\nHuman:"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stream": stream,
    })
}

fn expected_output() -> Value {
    json!([{
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "content": "User wants the forecast."},
            {"type": "text", "content": "It's 18°C; checking tomorrow."},
            {"type": "tool_call", "id": "toolu_01B", "name": "get_forecast", "arguments": {"city": "Paris", "days": 2}}
        ],
        "finish_reason": "tool_use"
    }])
}

#[test]
fn json_response() {
    let response = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "User wants the forecast.", "signature": "EqQBCgIYAhIM"},
            {"type": "text", "text": "It's 18°C; checking tomorrow."},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_forecast", "input": {"city": "Paris", "days": 2}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 400, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1200, "output_tokens": 90}
    });
    let call = recognised(&json_exchange(HOST, PATH, &request(false), 200, &response));

    assert_eq!(call.provider, "anthropic");
    assert_eq!(call.operation, "chat");
    for (key, value) in [
        (attr::REQUEST_MODEL, json!("claude-sonnet-4-5")),
        (attr::REQUEST_STREAM, json!(false)),
        (attr::REQUEST_MAX_TOKENS, json!(1024)),
        (attr::REQUEST_TEMPERATURE, json!(0.7)),
        (attr::REQUEST_TOP_P, json!(0.95)),
        (attr::REQUEST_TOP_K, json!(40)),
        (attr::REQUEST_STOP_SEQUENCES, json!(["\n\nHuman:"])),
        (attr::RESPONSE_ID, json!("msg_01XFDUDYJgAACzvnptvVoYEL")),
        (attr::RESPONSE_MODEL, json!("claude-sonnet-4-5-20250929")),
        (attr::RESPONSE_FINISH_REASONS, json!(["tool_use"])),
        // Anthropic counts cached input apart; the conventions' input count includes it.
        (attr::USAGE_INPUT_TOKENS, json!(1700)),
        (attr::USAGE_CACHE_READ_INPUT_TOKENS, json!(1200)),
        (attr::USAGE_CACHE_CREATION_INPUT_TOKENS, json!(100)),
        (attr::USAGE_OUTPUT_TOKENS, json!(90)),
        (
            attr::SYSTEM_INSTRUCTIONS,
            json!([{"type": "text", "content": "You are a weather bot."}]),
        ),
    ] {
        assert_eq!(get(&call, key), &value, "{key}");
    }
    assert_eq!(
        get(&call, attr::INPUT_MESSAGES),
        &json!([
            {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "toolu_01A", "name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"role": "user", "parts": [{"type": "tool_call_response", "id": "toolu_01A", "response": "18C, sunny"}]}
        ])
    );
    assert_eq!(get(&call, attr::OUTPUT_MESSAGES), &expected_output());
    assert_eq!(
        get(&call, attr::TOOL_DEFINITIONS),
        &json!([{"type": "function", "name": "get_forecast", "description": "Forecast for a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}])
    );
}

#[test]
fn string_system_prompt() {
    let request = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 64, "system": "Be terse.",
                         "messages": [{"role": "user", "content": "Hi"}]});
    let exchange = post(HOST, PATH, &request);
    let call = recognised(&exchange);
    assert_eq!(
        get(&call, attr::SYSTEM_INSTRUCTIONS),
        &json!([{"type": "text", "content": "Be terse."}])
    );
    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("no_response"));
}

/// The events of a streamed response equal to `json_response`'s, in the order Anthropic sends them.
fn stream_events() -> Vec<Value> {
    let delta = |index: u64, delta: Value| json!({"type": "content_block_delta", "index": index, "delta": delta});
    vec![
        json!({"type": "message_start", "message": {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": 400, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1200, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "User wants "}),
        ),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "the forecast."}),
        ),
        delta(
            0,
            json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM"}),
        ),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        delta(1, json!({"type": "text_delta", "text": "It's 18°C; "})),
        delta(
            1,
            json!({"type": "text_delta", "text": "checking tomorrow."}),
        ),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_01B", "name": "get_forecast", "input": {}}}),
        delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"city\": \"Par"}),
        ),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "is\", \"days\": 2}"}),
        ),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 90}}),
        json!({"type": "message_stop"}),
    ]
}

pub fn complete_stream() -> String {
    typed_sse(&stream_events())
}

#[test]
fn stream_matches_the_json_response() {
    let call = recognised(&sse_exchange(
        HOST,
        PATH,
        &request(true),
        &complete_stream(),
    ));

    assert_eq!(get(&call, attr::REQUEST_STREAM), &json!(true));
    assert_eq!(get(&call, attr::OUTPUT_MESSAGES), &expected_output());
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["tool_use"])
    );
    assert_eq!(
        get(&call, attr::RESPONSE_ID),
        &json!("msg_01XFDUDYJgAACzvnptvVoYEL")
    );
    assert_eq!(get(&call, attr::USAGE_INPUT_TOKENS), &json!(1700));
    assert_eq!(get(&call, attr::USAGE_OUTPUT_TOKENS), &json!(90));
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(18));
    assert_eq!(
        get(&call, attr::RESPONSE_TIME_TO_FIRST_CHUNK),
        &json!(part_time(2))
    );
    assert_eq!(call.attribute(attr::ERROR_TYPE), None);
}

#[test]
fn error_event_mid_stream() {
    let mut events: Vec<Value> = stream_events().into_iter().take(10).collect();
    events.push(
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    let call = recognised(&sse_exchange(
        HOST,
        PATH,
        &request(true),
        &typed_sse(&events),
    ));

    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("overloaded_error"));
    assert_eq!(
        get(&call, attr::OBSERVER_ERROR_MESSAGE),
        &json!("Overloaded")
    );
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["error"]));
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [
            {"type": "reasoning", "content": "User wants the forecast."},
            {"type": "text", "content": "It's 18°C; checking tomorrow."}
        ], "finish_reason": "error"}])
    );
}

#[test]
fn compatible_hosts_keep_their_names() {
    let call = recognised(&post(
        "api.deepseek.com",
        "/anthropic/v1/messages",
        &request(false),
    ));
    assert_eq!(call.provider, "deepseek");
}
