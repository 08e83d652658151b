"""Calls through the official openai SDK, one client (one kept-alive connection pool) for all.
With OPENAI_HTTP2=1 its httpx client speaks HTTP/2 (one connection, a stream per call).

Usage: openai_calls.py SCENARIO...   (see SCENARIOS below; parallelN:SCENARIO runs N threads)
"""

import os
import sys

import httpx2
import openai

from common import (API_KEY, BASE, TIMEOUT, WEATHER_TOOL, big_prompt, emit, note, run_scenarios,
                    ssl_context)

client = openai.OpenAI(
    api_key=API_KEY,
    base_url=BASE + "/v1",
    max_retries=0,
    timeout=TIMEOUT,
    http_client=httpx2.Client(verify=ssl_context(), timeout=TIMEOUT,
                              http2=os.environ.get("OPENAI_HTTP2") == "1"),
)


def usage_fields(usage):
    if usage is None:
        return {"input_tokens": None, "output_tokens": None}
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def chat(name, prompt, model="gpt-4o", stream=False, include_usage=False, tools=None, **extra):
    """One chat completion; prints what the client received."""
    kwargs = dict(model=model, messages=[{"role": "system", "content": "You are terse."},
                                         {"role": "user", "content": prompt}], **extra)
    if tools:
        kwargs["tools"] = tools
    base = dict(path="/v1/chat/completions", model=model, prompt=prompt, stream=stream, **extra)
    if not stream:
        r = client.chat.completions.create(**kwargs)
        choice = r.choices[0]
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                 for c in (choice.message.tool_calls or [])]
        emit(name, **base, status=200, response_id=r.id, response_model=r.model,
             text=choice.message.content or "", tool_calls=calls,
             finish_reason=choice.finish_reason, **usage_fields(r.usage))
        return
    if include_usage:
        kwargs["stream_options"] = {"include_usage": True}
    text, calls, finish, usage, rid, rmodel = [], {}, None, None, None, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        rid, rmodel = chunk.id, chunk.model
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                if not text:
                    note("first-delta id=%s" % chunk.id)
                text.append(choice.delta.content)
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    call["id"] = tc.id
                if tc.function and tc.function.name:
                    call["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    call["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    emit(name, **base, status=200, response_id=rid, response_model=rmodel, text="".join(text),
         tool_calls=[calls[i] for i in sorted(calls)], finish_reason=finish, **usage_fields(usage))


def rate_limited(name):
    prompt = "%s: please [429]" % name
    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": prompt}])
    except openai.RateLimitError as e:
        emit(name, path="/v1/chat/completions", model="gpt-4o", prompt=prompt, stream=False,
             status=e.status_code, error=e.body.get("code") if isinstance(e.body, dict) else str(e))
        return
    sys.exit("%s: expected a RateLimitError" % name)


def responses(name, stream):
    prompt = "%s: summarise the plot of Hamlet" % name
    model = "gpt-4.1"
    base = dict(path="/v1/responses", model=model, prompt=prompt, stream=stream, tool_calls=[],
                max_tokens=500)
    if not stream:
        r = client.responses.create(model=model, input=prompt, instructions="Be brief.",
                                    max_output_tokens=500)
        emit(name, **base, status=200, response_id=r.id, response_model=r.model,
             text=r.output_text, finish_reason=r.status, input_tokens=r.usage.input_tokens,
             output_tokens=r.usage.output_tokens)
        return
    text, final = [], None
    for event in client.responses.create(model=model, input=prompt, instructions="Be brief.",
                                         max_output_tokens=500, stream=True):
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    emit(name, **base, status=200, response_id=final.id, response_model=final.model,
         text="".join(text), finish_reason=final.status, input_tokens=final.usage.input_tokens,
         output_tokens=final.usage.output_tokens)


def embeddings(name):
    model = "text-embedding-3-small"
    inputs = ["%s: first text to embed" % name, "second text"]
    r = client.embeddings.create(model=model, input=inputs)
    emit(name, path="/v1/embeddings", model=model, prompt=inputs[-1], stream=False, status=200,
         response_id=None, response_model=r.model, text="", tool_calls=[], finish_reason=None,
         input_tokens=r.usage.prompt_tokens, output_tokens=None, vectors=len(r.data))


def completions(name, stream):
    model = "gpt-3.5-turbo-instruct"
    prompt = "%s: once upon a time" % name
    base = dict(path="/v1/completions", model=model, prompt=prompt, stream=stream, tool_calls=[],
                max_tokens=64)
    kwargs = dict(model=model, prompt=prompt, max_tokens=64)
    if not stream:
        r = client.completions.create(**kwargs)
        emit(name, **base, status=200, response_id=r.id, response_model=r.model,
             text=r.choices[0].text, finish_reason=r.choices[0].finish_reason, **usage_fields(r.usage))
        return
    text, finish, usage, rid, rmodel = [], None, None, None, None
    for chunk in client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        rid, rmodel = chunk.id, chunk.model
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.text)
            finish = choice.finish_reason or finish
    emit(name, **base, status=200, response_id=rid, response_model=rmodel, text="".join(text),
         finish_reason=finish, **usage_fields(usage))


SCENARIOS = {
    "chat_json": lambda n: chat(n, "%s: what is the capital of France?" % n, temperature=0.25,
                                max_tokens=200),
    "chat_stream_usage": lambda n: chat(n, "%s: count to five" % n, model="gpt-4o-mini",
                                        stream=True, include_usage=True),
    "chat_stream_no_usage": lambda n: chat(n, "%s: count to six" % n, model="gpt-4o-mini",
                                           stream=True),
    "chat_tool_json": lambda n: chat(n, "%s: weather in Paris" % n, tools=[WEATHER_TOOL]),
    "chat_tool_stream": lambda n: chat(n, "%s: weather in Tokyo today" % n, tools=[WEATHER_TOOL],
                                       stream=True, include_usage=True),
    "chat_stream_split": lambda n: chat(n, "%s: split events [split]" % n, stream=True,
                                        include_usage=True),
    "chat_stream_merge": lambda n: chat(n, "%s: merged events [merge]" % n, stream=True,
                                        include_usage=True),
    "chat_stream_big": lambda n: chat(n, "%s: a long answer [big]" % n, stream=True,
                                      include_usage=True),
    "chat_stream_slow": lambda n: chat(n, "%s: a slow answer [slow]" % n, stream=True,
                                       include_usage=True),
    "chat_json_gzip": lambda n: chat(n, "%s: compressed answer [gzip]" % n),
    "chat_big_request": lambda n: chat(n, big_prompt(110 * 1024)),
    "chat_429": rate_limited,
    "responses_json": lambda n: responses(n, stream=False),
    "responses_stream": lambda n: responses(n, stream=True),
    "embeddings": embeddings,
    "completions_json": lambda n: completions(n, stream=False),
    "completions_stream": lambda n: completions(n, stream=True),
}

run_scenarios(SCENARIOS, sys.argv[1:])
