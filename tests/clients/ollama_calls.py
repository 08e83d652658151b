"""Calls through the official ollama Python client (httpx), one client for all.

The server is MOCK_BASE (TLS, the mock's CA trusted), or OLLAMA_BASE when set: a plaintext
http:// server such as a local Ollama on port 11434, for when the observer captures plain HTTP.

Usage: ollama_calls.py SCENARIO...   (see SCENARIOS below)
"""

import json
import os
import sys

import ollama

from common import BASE, TIMEOUT, emit, run_scenarios, ssl_context

HOST = os.environ.get("OLLAMA_BASE", BASE)
client = ollama.Client(host=HOST, timeout=TIMEOUT,
                       **({"verify": ssl_context()} if HOST.startswith("https:") else {}))

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}


def record(name, path, operation, model, prompt, stream, **fields):
    emit(name, path=path, provider="ollama", operation=operation, model=model, prompt=prompt,
         stream=stream, response_id=None, **fields)


def tool_calls_of(message):
    # Ollama's tool calls carry no id.
    return [{"id": None, "name": c.function.name, "arguments": json.dumps(dict(c.function.arguments))}
            for c in message.tool_calls or []]


def chat(name, prompt, model="llama3.2", stream=False, tools=None):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": prompt}]
    options = {"temperature": 0.4, "num_predict": 128}
    kwargs = dict(model=model, messages=messages, options=options, tools=tools, stream=stream)
    fields = dict(temperature=0.4, max_tokens=128)
    if not stream:
        r = client.chat(**kwargs)
        record(name, "/api/chat", "chat", model, prompt, False, **fields, status=200,
               response_model=r.model, text=r.message.content or "",
               tool_calls=tool_calls_of(r.message), finish_reason=r.done_reason,
               input_tokens=r.prompt_eval_count, output_tokens=r.eval_count)
        return
    text, calls, last = [], [], None
    for part in client.chat(**kwargs):
        text.append(part.message.content or "")
        calls.extend(tool_calls_of(part.message))
        last = part
    record(name, "/api/chat", "chat", model, prompt, True, **fields, status=200,
           response_model=last.model, text="".join(text), tool_calls=calls,
           finish_reason=last.done_reason, input_tokens=last.prompt_eval_count,
           output_tokens=last.eval_count)


def generate(name, prompt, stream):
    model = "qwen2.5:0.5b"
    if not stream:
        r = client.generate(model=model, prompt=prompt, stream=False)
        text, last = r.response, r
    else:
        text, last = "", None
        for part in client.generate(model=model, prompt=prompt, stream=True):
            text += part.response or ""
            last = part
    record(name, "/api/generate", "text_completion", model, prompt, stream, status=200,
           response_model=last.model, text=text, tool_calls=[], finish_reason=last.done_reason,
           input_tokens=last.prompt_eval_count, output_tokens=last.eval_count)


def embed(name):
    model = "nomic-embed-text"
    inputs = ["%s: first text to embed" % name, "second text"]
    r = client.embed(model=model, input=inputs)
    record(name, "/api/embed", "embeddings", model, inputs[-1], False, status=200,
           response_model=r.model, text="", tool_calls=[], finish_reason=None,
           input_tokens=r.prompt_eval_count, output_tokens=None, vectors=len(r.embeddings))


def failing(name, prompt, expected_status, model="llama3.2"):
    try:
        client.chat(model=model, messages=[{"role": "user", "content": prompt}], stream=False)
    except ollama.ResponseError as e:
        if e.status_code != expected_status:
            sys.exit("%s: expected HTTP %d, got %s" % (name, expected_status, e.status_code))
        record(name, "/api/chat", "chat", model, prompt, False, status=e.status_code,
               error_message=e.error)
        return
    sys.exit("%s: expected a ResponseError" % name)


def interrupted(name):
    """A stream the server cuts off half-way: the client keeps what arrived."""
    model, prompt = "llama3.2", "%s: tell a long story [cut]" % name
    text = []
    try:
        for part in client.chat(model=model, messages=[{"role": "user", "content": prompt}],
                                stream=True):
            text.append(part.message.content or "")
    except Exception as e:  # httpx's error for a body cut short
        record(name, "/api/chat", "chat", model, prompt, True, status=200, response_model=model,
               text="".join(text), interrupted=True, error=type(e).__name__)
        return
    sys.exit("%s: expected the stream to fail" % name)


SCENARIOS = {
    "chat": lambda n: chat(n, "%s: what is the capital of Peru?" % n),
    "chat_stream": lambda n: chat(n, "%s: count to nine" % n, model="llama3.1:8b", stream=True),
    "chat_tool": lambda n: chat(n, "%s: weather in Lisbon" % n, model="qwen3:4b", tools=[WEATHER]),
    "chat_tool_stream": lambda n: chat(n, "%s: weather in Cairo" % n, model="qwen3:8b",
                                       stream=True, tools=[WEATHER]),
    "chat_stream_merge": lambda n: chat(n, "%s: merged lines [merge]" % n, model="gemma3:1b",
                                        stream=True),
    "generate": lambda n: generate(n, "%s: once upon a time" % n, stream=False),
    "generate_stream": lambda n: generate(n, "%s: a streamed story" % n, stream=True),
    "embed": embed,
    "chat_404": lambda n: failing(n, "%s: no such model" % n, 404, model="missing-model"),
    "chat_500": lambda n: failing(n, "%s: broken [500]" % n, 500, model="llama3.2:1b"),
    "chat_interrupted": interrupted,
}

run_scenarios(SCENARIOS, sys.argv[1:])
