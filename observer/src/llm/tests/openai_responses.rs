//! OpenAI Responses API: JSON and streamed, with function calls and reasoning.
use serde_json::{Value, json};

use super::support::*;
use crate::http::ExchangeEnd;
use crate::llm::attr;

const HOST: &str = "api.openai.com";
const PATH: &str = "/v1/responses";

fn request(stream: bool) -> Value {
    json!({
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "conversation": {"id": "conv_689667905b048191b4740501625afd94"},
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp_c\":18}"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]}
        ],
        "tools": [{"type": "function", "name": "get_forecast", "description": "Forecast",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}},
                  {"type": "web_search"}],
        "max_output_tokens": 500,
        "temperature": 0.5,
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {}}},
        "stream": stream,
    })
}

fn final_output() -> Value {
    json!([
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need the forecast."}]},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking the forecast.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_2", "name": "get_forecast",
         "arguments": "{\"city\":\"Paris\",\"days\":1}", "status": "completed"}
    ])
}

fn final_response(status: &str) -> Value {
    json!({
        "id": "resp_67ccd2bed1ec8190b14f964abc054267",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "model": "gpt-4.1-2025-04-14",
        "output": final_output(),
        "usage": {"input_tokens": 136, "input_tokens_details": {"cached_tokens": 128},
                  "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 223}
    })
}

fn expected_output(finish_reason: &str) -> Value {
    json!([{
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "content": "Need the forecast."},
            {"type": "text", "content": "Checking the forecast."},
            {"type": "tool_call", "id": "call_2", "name": "get_forecast", "arguments": {"city": "Paris", "days": 1}}
        ],
        "finish_reason": finish_reason
    }])
}

#[test]
fn json_response() {
    let call = recognised(&json_exchange(
        HOST,
        PATH,
        &request(false),
        200,
        &final_response("completed"),
    ));

    assert_eq!(call.operation, "chat");
    for (key, value) in [
        (attr::REQUEST_MODEL, json!("gpt-4.1")),
        (attr::REQUEST_STREAM, json!(false)),
        (attr::REQUEST_MAX_TOKENS, json!(500)),
        (attr::REQUEST_TEMPERATURE, json!(0.5)),
        (
            attr::CONVERSATION_ID,
            json!("conv_689667905b048191b4740501625afd94"),
        ),
        (attr::OUTPUT_TYPE, json!("json")),
        (
            attr::SYSTEM_INSTRUCTIONS,
            json!([{"type": "text", "content": "Be brief."}]),
        ),
        (
            attr::RESPONSE_ID,
            json!("resp_67ccd2bed1ec8190b14f964abc054267"),
        ),
        (attr::RESPONSE_MODEL, json!("gpt-4.1-2025-04-14")),
        (attr::RESPONSE_FINISH_REASONS, json!(["completed"])),
        (attr::USAGE_INPUT_TOKENS, json!(136)),
        (attr::USAGE_OUTPUT_TOKENS, json!(87)),
        (attr::USAGE_CACHE_READ_INPUT_TOKENS, json!(128)),
        (attr::USAGE_REASONING_OUTPUT_TOKENS, json!(64)),
    ] {
        assert_eq!(get(&call, key), &value, "{key}");
    }
    assert_eq!(
        get(&call, attr::INPUT_MESSAGES),
        &json!([
            {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "{\"temp_c\":18}"}]},
            {"role": "user", "parts": [{"type": "text", "content": "And tomorrow?"}]}
        ])
    );
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &expected_output("completed")
    );
    assert_eq!(
        get(&call, attr::TOOL_DEFINITIONS),
        &json!([{"type": "function", "name": "get_forecast", "description": "Forecast",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}},
                {"type": "web_search"}])
    );
}

#[test]
fn plain_string_input_and_incomplete_status() {
    let request = json!({"model": "o4-mini", "input": "Tell me a long story"});
    let mut response = final_response("incomplete");
    response["incomplete_details"] = json!({"reason": "max_output_tokens"});
    let call = recognised(&json_exchange(HOST, PATH, &request, 200, &response));

    assert_eq!(
        get(&call, attr::INPUT_MESSAGES),
        &json!([{"role": "user", "parts": [{"type": "text", "content": "Tell me a long story"}]}])
    );
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["max_output_tokens"])
    );
    assert_eq!(call.attribute(attr::CONVERSATION_ID), None);
}

/// Every event up to (not including) the terminal one, with `sequence_number`s as sent.
fn stream_events() -> Vec<Value> {
    let mut created = final_response("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    let events = vec![
        json!({"type": "response.created", "response": created}),
        json!({"type": "response.in_progress", "response": created}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        json!({"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 0, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
        json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": "Need the "}),
        json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": "forecast."}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "Checking"}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": " the forecast."}),
        json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 1, "content_index": 0, "text": "Checking the forecast."}),
        json!({"type": "response.output_item.added", "output_index": 2, "item": {"type": "function_call", "id": "fc_1", "call_id": "call_2", "name": "get_forecast", "arguments": "", "status": "in_progress"}}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": "{\"city\":\"Paris\","}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": "\"days\":1}"}),
    ];
    (0..)
        .zip(events)
        .map(|(n, mut event)| {
            event["sequence_number"] = json!(n);
            event
        })
        .collect()
}

pub fn complete_stream() -> String {
    let mut events = stream_events();
    events.push(json!({"type": "response.completed", "sequence_number": 99, "response": final_response("completed")}));
    typed_sse(&events)
}

#[test]
fn stream_with_function_call() {
    let call = recognised(&sse_exchange(
        HOST,
        PATH,
        &request(true),
        &complete_stream(),
    ));

    assert_eq!(get(&call, attr::REQUEST_STREAM), &json!(true));
    assert_eq!(
        get(&call, attr::RESPONSE_ID),
        &json!("resp_67ccd2bed1ec8190b14f964abc054267")
    );
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["completed"])
    );
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &expected_output("completed")
    );
    assert_eq!(get(&call, attr::USAGE_OUTPUT_TOKENS), &json!(87));
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(15));
    // First reasoning delta: event 4.
    assert_eq!(
        get(&call, attr::RESPONSE_TIME_TO_FIRST_CHUNK),
        &json!(part_time(4))
    );
    assert_eq!(call.attribute(attr::ERROR_TYPE), None);
}

#[test]
fn stream_cut_before_the_terminal_event_keeps_the_deltas() {
    let mut exchange = sse_exchange(HOST, PATH, &request(true), &typed_sse(&stream_events()));
    exchange.end = ExchangeEnd::ConnectionClosed;
    let call = recognised(&exchange);

    assert_eq!(get(&call, attr::OUTPUT_MESSAGES), &expected_output("error"));
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["error"]));
    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("stream_interrupted"));
    assert_eq!(
        get(&call, attr::OBSERVER_EXCHANGE_END),
        &json!("connection_closed")
    );
    assert_eq!(
        get(&call, attr::RESPONSE_MODEL),
        &json!("gpt-4.1-2025-04-14")
    );
    assert_eq!(get(&call, attr::OBSERVER_USAGE_SOURCE), &json!("estimated"));
}

#[test]
fn failed_stream_reports_the_response_error() {
    let mut failed = final_response("failed");
    failed["output"] = json!([]);
    failed["error"] = json!({"code": "server_error", "message": "The server had an error."});
    let body = typed_sse(&[
        json!({"type": "response.created", "response": final_response("in_progress")}),
        json!({"type": "response.failed", "response": failed}),
    ]);
    let call = recognised(&sse_exchange(HOST, PATH, &request(true), &body));

    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("server_error"));
    assert_eq!(
        get(&call, attr::OBSERVER_ERROR_MESSAGE),
        &json!("The server had an error.")
    );
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["failed"])
    );
}

#[test]
fn stream_error_event() {
    let body = typed_sse(&[json!({"type": "error", "code": "rate_limit_exceeded",
                                    "message": "Slow down", "param": null, "sequence_number": 0})]);
    let call = recognised(&sse_exchange(HOST, PATH, &request(true), &body));

    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("rate_limit_exceeded"));
    assert_eq!(
        get(&call, attr::OBSERVER_ERROR_CODE),
        &json!("rate_limit_exceeded")
    );
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["error"]));
}
