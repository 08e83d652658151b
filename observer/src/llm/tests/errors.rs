//! Provider errors, HTTP errors, and exchanges that ended early.
use serde_json::json;

use super::support::*;
use crate::http::ExchangeEnd;
use crate::llm::attr;

fn chat_request() -> serde_json::Value {
    json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})
}

#[test]
fn openai_rate_limit_body() {
    let body = json!({"error": {"message": "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM)",
                                "type": "tokens", "param": null, "code": "rate_limit_exceeded"}});
    let call = recognised(&json_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        &chat_request(),
        429,
        &body,
    ));

    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("tokens"));
    assert_eq!(
        get(&call, attr::OBSERVER_ERROR_CODE),
        &json!("rate_limit_exceeded")
    );
    assert!(
        get(&call, attr::OBSERVER_ERROR_MESSAGE)
            .as_str()
            .is_some_and(|m| m.starts_with("Rate limit"))
    );
    assert_eq!(get(&call, attr::REQUEST_MODEL), &json!("gpt-4o"));
    assert_eq!(call.attribute(attr::RESPONSE_FINISH_REASONS), None);
}

#[test]
fn anthropic_rate_limit_body() {
    let request = json!({"model": "claude-opus-4-1", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]});
    let body = json!({"type": "error", "error": {"type": "rate_limit_error",
                      "message": "Number of request tokens has exceeded your per-minute rate limit"},
                      "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"});
    let call = recognised(&json_exchange(
        "api.anthropic.com",
        "/v1/messages",
        &request,
        429,
        &body,
    ));

    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("rate_limit_error"));
    assert_eq!(call.attribute(attr::OBSERVER_ERROR_CODE), None);
    assert!(call.attribute(attr::OBSERVER_ERROR_MESSAGE).is_some());
}

#[test]
fn non_json_error_body_gives_the_status() {
    let exchange = answer(
        post("api.openai.com", "/v1/chat/completions", &chat_request()),
        502,
        "text/html",
        whole_body("<html><body>502 Bad Gateway</body></html>"),
    );
    assert_eq!(get(&recognised(&exchange), attr::ERROR_TYPE), &json!("502"));
}

#[test]
fn error_without_type_or_code_gives_the_status() {
    let body = json!({"error": "model 'llama9' not found"});
    let call = recognised(&json_exchange(
        "localhost:11434",
        "/v1/chat/completions",
        &chat_request(),
        404,
        &body,
    ));
    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("404"));
    assert_eq!(
        get(&call, attr::OBSERVER_ERROR_MESSAGE),
        &json!("model 'llama9' not found")
    );
}

#[test]
fn chat_stream_error_chunk() {
    let body = "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
    let call = recognised(&sse_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        &chat_request(),
        body,
    ));

    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("server_error"));
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["error"]));
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hi"}], "finish_reason": "error"}])
    );
}

#[test]
fn chat_stream_cut_mid_event() {
    let stream = super::openai_chat::TEXT_STREAM;
    let cut = stream
        .find("\"finish_reason\":\"stop\"")
        .expect("fixture has a finish");
    let mut exchange = sse_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        &chat_request(),
        &stream[..cut],
    );
    exchange.end = ExchangeEnd::ConnectionClosed;
    let call = recognised(&exchange);

    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("stream_interrupted"));
    assert_eq!(
        get(&call, attr::OBSERVER_EXCHANGE_END),
        &json!("connection_closed")
    );
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["error"]));
    assert_eq!(get(&call, attr::RESPONSE_ID), &json!("chatcmpl-AyPX"));
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello there, \"friend\"\n"}], "finish_reason": "error"}])
    );
}

#[test]
fn stream_read_to_done_then_closed_is_whole() {
    // SDKs stop reading at `[DONE]` and close before the chunked body's last chunk.
    let mut exchange = sse_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        &chat_request(),
        super::openai_chat::TEXT_STREAM,
    );
    exchange.end = ExchangeEnd::ConnectionClosed;
    let call = recognised(&exchange);
    assert_eq!(call.attribute(attr::ERROR_TYPE), None);
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["stop"]));
}

#[test]
fn stream_that_ended_without_its_terminal_event() {
    let stream = super::openai_chat::TEXT_STREAM.replace("data: [DONE]\n\n", "");
    let call = recognised(&sse_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        &chat_request(),
        &stream,
    ));
    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("stream_interrupted"));
    // The finish reason did arrive: it stays.
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["stop"]));
}

#[test]
fn no_response() {
    let mut exchange = post("api.openai.com", "/v1/chat/completions", &chat_request());
    exchange.end = ExchangeEnd::ObserverStopped;
    let call = recognised(&exchange);
    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("observer_stopped"));
    assert_eq!(get(&call, attr::REQUEST_MODEL), &json!("gpt-4o"));
}

#[test]
fn json_response_cut_off() {
    let mut exchange = answer(
        post(
            "api.openai.com",
            "/v1/chat/completions",
            &json!({"model": "gpt-4o"}),
        ),
        200,
        "application/json",
        whole_body("{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"message\":{\"role\""),
    );
    exchange.end = ExchangeEnd::DataLost;
    let call = recognised(&exchange);
    assert_eq!(get(&call, attr::ERROR_TYPE), &json!("data_lost"));
    assert_eq!(get(&call, attr::OBSERVER_EXCHANGE_END), &json!("data_lost"));
}
