//! OpenAI Chat Completions: JSON and streamed, with tools and several choices.
use serde_json::{Value, json};

use super::support::*;
use crate::llm::attr;

const HOST: &str = "api.openai.com";
const PATH: &str = "/v1/chat/completions";

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }})
}

fn tool_request(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and the time?"},
                                          {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 256,
        "stop": "END",
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.0,
        "n": 1,
        "tools": [weather_tool()],
        "response_format": {"type": "json_object"},
        "stream": stream,
    })
}

/// The assistant turn both the JSON and the streamed tool-call responses carry.
fn expected_tool_call_output() -> Value {
    json!([{
        "role": "assistant",
        "parts": [
            {"type": "tool_call", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"type": "tool_call", "id": "call_2", "name": "get_time", "arguments": {"tz": "CET"}}
        ],
        "finish_reason": "tool_calls"
    }])
}

#[test]
fn json_response_with_tool_calls() {
    let response = json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"tz\": \"CET\"}"}}
            ]},
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
                  "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    });
    let call = recognised(&json_exchange(
        HOST,
        PATH,
        &tool_request(false),
        200,
        &response,
    ));

    assert_eq!(call.provider, "openai");
    assert_eq!(call.operation, "chat");
    assert_eq!(call.request_model.as_deref(), Some("gpt-4o-mini"));
    for (key, value) in [
        (attr::PROVIDER_NAME, json!("openai")),
        (attr::OPERATION_NAME, json!("chat")),
        (attr::REQUEST_MODEL, json!("gpt-4o-mini")),
        (attr::REQUEST_STREAM, json!(false)),
        (attr::REQUEST_TEMPERATURE, json!(0.2)),
        (attr::REQUEST_TOP_P, json!(0.9)),
        (attr::REQUEST_MAX_TOKENS, json!(256)),
        (attr::REQUEST_STOP_SEQUENCES, json!(["END"])),
        (attr::REQUEST_SEED, json!(7)),
        (attr::REQUEST_FREQUENCY_PENALTY, json!(0.1)),
        (attr::REQUEST_PRESENCE_PENALTY, json!(0.0)),
        (attr::OUTPUT_TYPE, json!("json")),
        (
            attr::RESPONSE_ID,
            json!("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"),
        ),
        (attr::RESPONSE_MODEL, json!("gpt-4o-mini-2024-07-18")),
        (attr::RESPONSE_FINISH_REASONS, json!(["tool_calls"])),
        (attr::USAGE_INPUT_TOKENS, json!(82)),
        (attr::USAGE_OUTPUT_TOKENS, json!(17)),
        (attr::USAGE_CACHE_READ_INPUT_TOKENS, json!(64)),
        (attr::USAGE_REASONING_OUTPUT_TOKENS, json!(0)),
        (attr::OBSERVER_USAGE_SOURCE, json!("reported")),
    ] {
        assert_eq!(get(&call, key), &value, "{key}");
    }
    for absent in [
        attr::REQUEST_CHOICE_COUNT,
        attr::ERROR_TYPE,
        attr::CONVERSATION_ID,
        attr::RESPONSE_TIME_TO_FIRST_CHUNK,
        attr::OBSERVER_STREAM_CHUNK_COUNT,
    ] {
        assert_eq!(call.attribute(absent), None, "{absent}");
    }
    assert_eq!(
        get(&call, attr::INPUT_MESSAGES),
        &json!([
            {"role": "system", "parts": [{"type": "text", "content": "You are terse."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris and the time?"},
                                       {"type": "image_url"}]}
        ])
    );
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &expected_tool_call_output()
    );
    assert_eq!(
        get(&call, attr::TOOL_DEFINITIONS),
        &json!([{"type": "function", "name": "get_weather", "description": "Current weather for a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
}

#[test]
fn tool_history_and_several_choices() {
    let request = json!({
        "model": "gpt-4o",
        "n": 2,
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18}"}
        ]
    });
    let response = json!({
        "id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "18°C."}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "It is 18"}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}
    });
    let call = recognised(&json_exchange(HOST, PATH, &request, 200, &response));

    assert_eq!(get(&call, attr::REQUEST_CHOICE_COUNT), &json!(2));
    assert_eq!(get(&call, attr::REQUEST_MAX_TOKENS), &json!(50));
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["stop", "length"])
    );
    assert_eq!(
        get(&call, attr::INPUT_MESSAGES),
        &json!([
            {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "{\"temp_c\": 18}"}]}
        ])
    );
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([
            {"role": "assistant", "parts": [{"type": "text", "content": "18°C."}], "finish_reason": "stop"},
            {"role": "assistant", "parts": [{"type": "text", "content": "It is 18"}], "finish_reason": "length"}
        ])
    );
    assert_eq!(call.attribute(attr::USAGE_CACHE_READ_INPUT_TOKENS), None);
}

/// A text stream as OpenAI sends it, without `stream_options.include_usage`.
pub const TEXT_STREAM: &str = "\
data: {\"id\":\"chatcmpl-AyPX\",\"object\":\"chat.completion.chunk\",\"created\":1738960000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_4691090a87\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]}

data: {\"id\":\"chatcmpl-AyPX\",\"object\":\"chat.completion.chunk\",\"created\":1738960000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_4691090a87\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}

data: {\"id\":\"chatcmpl-AyPX\",\"object\":\"chat.completion.chunk\",\"created\":1738960000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_4691090a87\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there, \\\"friend\\\"\\n\"},\"logprobs\":null,\"finish_reason\":null}]}

data: {\"id\":\"chatcmpl-AyPX\",\"object\":\"chat.completion.chunk\",\"created\":1738960000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_4691090a87\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}

data: [DONE]

";

fn text_request() -> Value {
    json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Say hello"}]})
}

#[test]
fn stream_without_usage() {
    let call = recognised(&sse_exchange(HOST, PATH, &text_request(), TEXT_STREAM));

    assert_eq!(get(&call, attr::REQUEST_STREAM), &json!(true));
    assert_eq!(get(&call, attr::RESPONSE_ID), &json!("chatcmpl-AyPX"));
    assert_eq!(
        get(&call, attr::RESPONSE_MODEL),
        &json!("gpt-4o-2024-08-06")
    );
    assert_eq!(get(&call, attr::RESPONSE_FINISH_REASONS), &json!(["stop"]));
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello there, \"friend\"\n"}], "finish_reason": "stop"}])
    );
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(4));
    // The first chunk only announces the role: content starts in the second event (part 1).
    assert_eq!(
        get(&call, attr::RESPONSE_TIME_TO_FIRST_CHUNK),
        &json!(part_time(1))
    );
    assert_eq!(call.attribute(attr::ERROR_TYPE), None);
    // No usage on the wire: estimated with gpt-4o's tokenizer (o200k_base).
    assert_eq!(get(&call, attr::OBSERVER_USAGE_SOURCE), &json!("estimated"));
    assert!(
        get(&call, attr::USAGE_OUTPUT_TOKENS)
            .as_u64()
            .is_some_and(|n| n > 0)
    );
}

/// Two choices interleaved, then the usage chunk `include_usage` asks for.
pub fn two_choice_stream_with_usage() -> String {
    let chunk = |choices: Value| {
        json!({"id": "chatcmpl-n2", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
               "choices": choices, "usage": null})
    };
    let mut body = sse(&[
        (
            None,
            chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null},
                            {"index": 1, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            ),
        ),
        (
            None,
            chunk(json!([{"index": 1, "delta": {"content": "Bon"}, "finish_reason": null}])),
        ),
        (
            None,
            chunk(json!([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}])),
        ),
        (
            None,
            chunk(json!([{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}])),
        ),
        (
            None,
            chunk(json!([{"index": 1, "delta": {"content": "jour"}, "finish_reason": null}])),
        ),
        (
            None,
            chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])),
        ),
        (
            None,
            chunk(json!([{"index": 1, "delta": {}, "finish_reason": "length"}])),
        ),
        (
            None,
            json!({"id": "chatcmpl-n2", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18", "choices": [],
                      "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16,
                                "prompt_tokens_details": {"cached_tokens": 0},
                                "completion_tokens_details": {"reasoning_tokens": 0}}}),
        ),
    ]);
    body.push_str("data: [DONE]\n\n");
    body
}

#[test]
fn stream_with_usage_and_two_choices() {
    let mut request = text_request();
    request["n"] = json!(2);
    request["stream_options"] = json!({"include_usage": true});
    let call = recognised(&sse_exchange(
        HOST,
        PATH,
        &request,
        &two_choice_stream_with_usage(),
    ));

    assert_eq!(get(&call, attr::REQUEST_CHOICE_COUNT), &json!(2));
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["stop", "length"])
    );
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([
            {"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"},
            {"role": "assistant", "parts": [{"type": "text", "content": "Bonjour"}], "finish_reason": "length"}
        ])
    );
    assert_eq!(get(&call, attr::USAGE_INPUT_TOKENS), &json!(12));
    assert_eq!(get(&call, attr::USAGE_OUTPUT_TOKENS), &json!(4));
    assert_eq!(get(&call, attr::OBSERVER_USAGE_SOURCE), &json!("reported"));
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(8));
    assert_eq!(
        get(&call, attr::RESPONSE_TIME_TO_FIRST_CHUNK),
        &json!(part_time(1))
    );
    assert_eq!(call.attribute(attr::ERROR_TYPE), None);
}

/// Two tool calls whose arguments arrive in fragments; id and name only in the first.
pub fn tool_call_stream() -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-tc", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let fragment = |index: u64, arguments: &str| {
        chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
            Value::Null,
        )
    };
    let mut body = sse(&[
        (
            None,
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
        ),
        (None, fragment(0, "{\"")),
        (None, fragment(0, "city\":\"Par")),
        (None, fragment(0, "is\"}")),
        (
            None,
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                            "function": {"name": "get_time", "arguments": "{\"tz\": "}}]}),
                Value::Null,
            ),
        ),
        (None, fragment(1, "\"CET\"}")),
        (None, chunk(json!({}), json!("tool_calls"))),
    ]);
    body.push_str("data: [DONE]\n\n");
    body
}

#[test]
fn stream_of_tool_call_fragments_matches_the_json_response() {
    let call = recognised(&sse_exchange(
        HOST,
        PATH,
        &tool_request(true),
        &tool_call_stream(),
    ));

    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &expected_tool_call_output()
    );
    assert_eq!(
        get(&call, attr::RESPONSE_FINISH_REASONS),
        &json!(["tool_calls"])
    );
    // The first event already names the call: a tool call is output.
    assert_eq!(
        get(&call, attr::RESPONSE_TIME_TO_FIRST_CHUNK),
        &json!(part_time(0))
    );
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(7));
}

#[test]
fn openrouter_comments_and_reasoning_content() {
    let body = format!(
        ": OPENROUTER PROCESSING\n\n{}: OPENROUTER PROCESSING\n\n{}data: [DONE]\n\n",
        sse(&[(
            None,
            json!({"id": "gen-1", "model": "deepseek/deepseek-r1",
                            "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Think."}}]})
        )]),
        sse(&[(
            None,
            json!({"id": "gen-1", "model": "deepseek/deepseek-r1",
                            "choices": [{"index": 0, "delta": {"content": "Done."}, "finish_reason": "stop"}]})
        )]),
    );
    let call = recognised(&sse_exchange(
        "openrouter.ai",
        "/api/v1/chat/completions",
        &text_request(),
        &body,
    ));

    assert_eq!(call.provider, "openrouter");
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(2));
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [{"type": "reasoning", "content": "Think."},
                                                 {"type": "text", "content": "Done."}], "finish_reason": "stop"}])
    );
}

#[test]
fn compatible_servers_are_recognised_by_path() {
    let response = json!({"id": "c", "model": "gpt-4o-2024-11-20", "choices": []});
    let azure = json_exchange(
        "my-resource.openai.azure.com",
        "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
        200,
        &response,
    );
    let call = recognised(&azure);
    assert_eq!(call.provider, "azure.ai.openai");
    assert_eq!(call.request_model, None);
    assert_eq!(call.attribute(attr::REQUEST_MODEL), None);
    assert_eq!(
        get(&call, attr::RESPONSE_MODEL),
        &json!("gpt-4o-2024-11-20")
    );

    for (host, target, provider) in [
        (
            "my-resource.openai.azure.com",
            "/openai/v1/chat/completions",
            "azure.ai.openai",
        ),
        ("localhost:11434", "/v1/chat/completions", "ollama"),
        ("api.groq.com", "/openai/v1/chat/completions", "groq"),
        ("api.deepseek.com", "/chat/completions", "deepseek"),
        ("api.mistral.ai", "/v1/chat/completions", "mistral_ai"),
        ("api.x.ai", "/v1/chat/completions", "x_ai"),
        ("vllm.internal:8000", "/v1/chat/completions", "openai"),
        (
            "proxy:3128",
            "https://api.openai.com/v1/chat/completions",
            "openai",
        ),
    ] {
        let exchange = json_exchange(host, target, &text_request(), 200, &response);
        assert_eq!(recognised(&exchange).provider, provider, "{host}{target}");
    }
}

/// Chunks the typed read refuses (a repeated key, fields of other types) are read through
/// `Value` as before: the latest key wins, fields of the wrong type count as absent.
#[test]
fn chunks_of_unexpected_shape_are_read_leniently() {
    let body = concat!(
        r#"data: {"id":"first","id":"chatcmpl-2","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
        "\n\n",
        r#"data: {"choices":[{"index":"0","delta":{"content":7,"reasoning":"Hmm."}}]}"#,
        "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"content":"lo \"you\""},"finish_reason":"stop"}]}"#,
        "\n\ndata: [DONE]\n\n",
    );
    let call = recognised(&sse_exchange(HOST, PATH, &text_request(), body));

    assert_eq!(get(&call, attr::RESPONSE_ID), &json!("chatcmpl-2"));
    assert_eq!(get(&call, attr::OBSERVER_STREAM_CHUNK_COUNT), &json!(3));
    assert_eq!(
        get(&call, attr::OUTPUT_MESSAGES),
        &json!([{"role": "assistant", "parts": [{"type": "reasoning", "content": "Hmm."},
                                                 {"type": "text", "content": "Hello \"you\""}], "finish_reason": "stop"}])
    );
}
