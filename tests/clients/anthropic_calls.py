"""Calls through the official anthropic SDK, one client for all.

Usage: anthropic_calls.py SCENARIO...   (see SCENARIOS below)
"""

import json
import sys

import anthropic
import httpx2

from common import API_KEY, BASE, TIMEOUT, emit, run_scenarios, ssl_context

client = anthropic.Anthropic(
    api_key=API_KEY,
    base_url=BASE,
    max_retries=0,
    timeout=TIMEOUT,
    http_client=httpx2.Client(verify=ssl_context(), timeout=TIMEOUT),
)
MODEL = "claude-sonnet-5"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}


def messages(name, prompt, stream=False, tools=None):
    kwargs = dict(model=MODEL, max_tokens=1024, system="You are terse.",
                  messages=[{"role": "user", "content": prompt}])
    if tools:
        kwargs["tools"] = tools
    base = dict(path="/v1/messages", model=MODEL, prompt=prompt, stream=stream, max_tokens=1024)
    if not stream:
        m = client.messages.create(**kwargs)
        calls = [{"id": b.id, "name": b.name, "arguments": json.dumps(b.input)}
                 for b in m.content if b.type == "tool_use"]
        emit(name, **base, status=200, response_id=m.id, response_model=m.model,
             text="".join(b.text for b in m.content if b.type == "text"), tool_calls=calls,
             finish_reason=m.stop_reason, input_tokens=m.usage.input_tokens,
             output_tokens=m.usage.output_tokens)
        return
    text, blocks, finish, rid, rmodel, input_tokens, output_tokens = [], {}, None, None, None, None, None
    for event in client.messages.create(stream=True, **kwargs):
        if event.type == "message_start":
            rid, rmodel = event.message.id, event.message.model
            input_tokens = event.message.usage.input_tokens
        elif event.type == "content_block_start" and event.content_block.type == "tool_use":
            blocks[event.index] = {"id": event.content_block.id, "name": event.content_block.name,
                                   "arguments": ""}
        elif event.type == "content_block_delta":
            if event.delta.type == "text_delta":
                text.append(event.delta.text)
            elif event.delta.type == "input_json_delta":
                blocks[event.index]["arguments"] += event.delta.partial_json
        elif event.type == "message_delta":
            finish = event.delta.stop_reason
            output_tokens = event.usage.output_tokens
    emit(name, **base, status=200, response_id=rid, response_model=rmodel, text="".join(text),
         tool_calls=[blocks[i] for i in sorted(blocks)], finish_reason=finish,
         input_tokens=input_tokens, output_tokens=output_tokens)


def rate_limited(name):
    prompt = "%s: please [429]" % name
    try:
        client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": prompt}])
    except anthropic.RateLimitError as e:
        emit(name, path="/v1/messages", model=MODEL, prompt=prompt, stream=False,
             status=e.status_code, error=e.body["error"]["type"] if isinstance(e.body, dict) else str(e))
        return
    sys.exit("%s: expected a RateLimitError" % name)


SCENARIOS = {
    "messages_json": lambda n: messages(n, "%s: name three colours" % n),
    "messages_stream": lambda n: messages(n, "%s: write a haiku" % n, stream=True),
    "tool_use_json": lambda n: messages(n, "%s: weather in Oslo" % n, tools=[WEATHER_TOOL]),
    "tool_use_stream": lambda n: messages(n, "%s: weather in Lima now" % n, stream=True,
                                          tools=[WEATHER_TOOL]),
    "messages_stream_split": lambda n: messages(n, "%s: split [split]" % n, stream=True),
    "messages_stream_merge": lambda n: messages(n, "%s: merge [merge]" % n, stream=True),
    "messages_stream_big": lambda n: messages(n, "%s: long [big]" % n, stream=True),
    "messages_429": rate_limited,
}

run_scenarios(SCENARIOS, sys.argv[1:])
