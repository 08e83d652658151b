//! Bodies from someone else's process: any split, any cut, any garbage.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::support::*;
use crate::http::{Exchange, ExchangeEnd};
use crate::llm::attr;

/// Every streamed fixture, as (host, path, request, body).
fn streams() -> Vec<(&'static str, &'static str, Value, String)> {
    let chat = json!({"model": "gpt-4o", "stream": true, "messages": []});
    vec![
        (
            "api.openai.com",
            "/v1/chat/completions",
            chat.clone(),
            super::openai_chat::TEXT_STREAM.to_owned(),
        ),
        (
            "api.openai.com",
            "/v1/chat/completions",
            chat.clone(),
            super::openai_chat::two_choice_stream_with_usage(),
        ),
        (
            "api.openai.com",
            "/v1/chat/completions",
            chat.clone(),
            super::openai_chat::tool_call_stream(),
        ),
        (
            "api.openai.com",
            "/v1/completions",
            chat,
            super::openai_other::legacy_completion_stream(),
        ),
        (
            "api.openai.com",
            "/v1/responses",
            json!({"stream": true}),
            super::openai_responses::complete_stream(),
        ),
        (
            "api.anthropic.com",
            "/v1/messages",
            json!({"stream": true}),
            super::anthropic::complete_stream(),
        ),
    ]
}

#[test]
fn any_split_into_reads_gives_the_same_attributes() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for (host, path, request, body) in streams() {
        let reference = recognised(&sse_exchange(host, path, &request, &body));
        for _ in 0..50 {
            let cuts: Vec<usize> = (0..rng.random_range(0..40))
                .map(|_| rng.random_range(0..body.len()))
                .collect();
            let exchange = answer(
                post(host, path, &request),
                200,
                "text/event-stream",
                body_in_parts(&body, &cuts),
            );
            let resplit = recognised(&exchange);
            assert_eq!(
                timeless(&resplit),
                timeless(&reference),
                "{path} cut at {cuts:?}"
            );
            let first_chunk = get(&resplit, attr::RESPONSE_TIME_TO_FIRST_CHUNK);
            assert!(
                first_chunk.as_f64().is_some_and(|s| s >= part_time(0)),
                "{path}: {first_chunk}"
            );
        }
    }
}

#[test]
fn first_chunk_time_follows_the_read_that_completed_the_event() {
    let body = super::openai_chat::TEXT_STREAM;
    // The second event is the first with content. Its data line ends in part 1, but the blank
    // line that completes it is split: its second "\n" arrives in part 2.
    let blank_line = body
        .match_indices("\n\n")
        .nth(1)
        .map(|(at, _)| at)
        .expect("two events");
    let cuts = [blank_line - 5, blank_line + 1];
    let exchange = answer(
        post("h", "/v1/chat/completions", &json!({})),
        200,
        "text/event-stream",
        body_in_parts(body, &cuts),
    );
    assert_eq!(
        get(&recognised(&exchange), attr::RESPONSE_TIME_TO_FIRST_CHUNK),
        &json!(part_time(2))
    );
}

fn recognise_cut(
    host: &str,
    path: &str,
    request: &Value,
    body: &str,
    status: u16,
) -> Option<crate::llm::LlmCall> {
    let mut exchange: Exchange = answer(
        post(host, path, request),
        status,
        "text/event-stream",
        whole_body(body),
    );
    exchange.end = ExchangeEnd::ConnectionClosed;
    recognise(&exchange)
}

#[test]
fn every_truncation_of_every_stream_is_read_without_panic() {
    for (host, path, request, body) in streams() {
        // Every 3rd position keeps this quick in debug builds while still cutting each
        // event at many places (inside keys, strings, escapes, line ends). Once the terminal
        // event has arrived the stream is whole, so cuts stop short of it.
        let terminal_event = body.trim_end().rfind("\n\n").map_or(0, |at| at + 2);
        for cut in (0..terminal_event)
            .step_by(3)
            .filter(|&at| body.is_char_boundary(at))
        {
            let call =
                recognise_cut(host, path, &request, &body[..cut], 200).expect("still recognised");
            assert_eq!(
                get(&call, attr::ERROR_TYPE),
                &json!("stream_interrupted"),
                "{path} cut at {cut}"
            );
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    for (host, path, request, body) in streams() {
        for _ in 0..200 {
            let mut bytes = body.clone().into_bytes();
            for _ in 0..rng.random_range(1..20) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            let mut exchange = answer(
                post(host, path, &request),
                200,
                "text/event-stream",
                whole_body(""),
            );
            if let Some(response) = exchange.response.as_mut() {
                response.body.data = bytes.into();
            }
            assert!(recognise(&exchange).is_some());
        }
    }
}

#[test]
fn fields_of_the_wrong_type_are_skipped() {
    let request = json!({"model": 5, "stream": "yes", "temperature": "hot", "max_tokens": [1], "stop": 3, "n": "two",
                         "messages": "not a list", "tools": {"a": 1}, "response_format": "json"});
    let response = json!({"id": 1, "model": null, "choices": [{"index": "0", "message": "hi", "finish_reason": 2}, 7],
                          "usage": {"prompt_tokens": -1, "completion_tokens": "3"}});
    let call = recognised(&json_exchange(
        "api.openai.com",
        "/v1/chat/completions",
        &request,
        200,
        &response,
    ));
    assert_eq!(call.request_model, None);
    for absent in [
        attr::REQUEST_TEMPERATURE,
        attr::REQUEST_MAX_TOKENS,
        attr::REQUEST_STOP_SEQUENCES,
        attr::REQUEST_CHOICE_COUNT,
        attr::INPUT_MESSAGES,
        attr::TOOL_DEFINITIONS,
        attr::RESPONSE_ID,
        attr::USAGE_INPUT_TOKENS,
        attr::USAGE_OUTPUT_TOKENS,
        attr::RESPONSE_FINISH_REASONS,
    ] {
        assert_eq!(call.attribute(absent), None, "{absent}");
    }
    assert_eq!(get(&call, attr::REQUEST_STREAM), &json!(false));

    let anthropic = json!({"model": ["x"], "system": 4, "messages": [{"role": 1, "content": [1, "x", {"type": 2}]}]});
    let call = recognised(&json_exchange(
        "api.anthropic.com",
        "/v1/messages",
        &anthropic,
        200,
        &json!({"content": "x", "usage": 5}),
    ));
    assert_eq!(call.request_model, None);
}

#[test]
fn hostile_stream_indices_do_not_allocate() {
    let max = u64::MAX;
    let chat = sse(&[(
        None,
        json!({"choices": [{"index": max, "delta": {"tool_calls": [
        {"index": max, "id": "a", "function": {"name": "f", "arguments": "{"}}, {"id": "b"}, {"function": {"arguments": "}"}}]}}]}),
    )]);
    let responses = sse(&[
        (
            None,
            json!({"type": "response.output_text.delta", "output_index": max, "content_index": max, "delta": "x"}),
        ),
        (
            None,
            json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": max, "delta": "y"}),
        ),
        (
            None,
            json!({"type": "response.output_item.added", "output_index": 1, "item": "not an item"}),
        ),
        (
            None,
            json!({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "z"}),
        ),
    ]);
    let anthropic = sse(&[
        (
            None,
            json!({"type": "content_block_delta", "index": max, "delta": {"type": "text_delta", "text": "x"}}),
        ),
        (
            None,
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t"}}),
        ),
        (
            None,
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}),
        ),
    ]);
    for (host, path, body) in [
        ("api.openai.com", "/v1/chat/completions", chat),
        ("api.openai.com", "/v1/responses", responses),
        ("api.anthropic.com", "/v1/messages", anthropic),
    ] {
        let call = recognised(&sse_exchange(host, path, &json!({}), &body));
        assert!(call.attribute(attr::OUTPUT_MESSAGES).is_some(), "{path}");
    }
}

#[test]
fn garbage_request_and_response_bodies() {
    let garbage = "\u{0}\u{1}not json at all {{{";
    let mut exchange = answer(
        post("api.openai.com", "/v1/responses", &json!({})),
        200,
        "application/json",
        whole_body(garbage),
    );
    exchange.request.body = whole_body(garbage);
    let call = recognised(&exchange);
    assert_eq!(call.operation, "chat");
    assert_eq!(call.attribute(attr::ERROR_TYPE), None);
}
