"""Calls through the official google-genai SDK (Gemini API), one client for all, trusting the
mock server's CA. With GENAI_HTTP2=1 its httpx client speaks HTTP/2.

Usage: gemini_calls.py SCENARIO...   (see SCENARIOS below)
"""

import json
import os
import sys

from google import genai
from google.genai import errors, types

from common import API_KEY, BASE, emit, run_scenarios, ssl_context

HTTP2 = os.environ.get("GENAI_HTTP2") == "1"
API_VERSION = "v1beta"
client = genai.Client(
    api_key=API_KEY,
    http_options=types.HttpOptions(
        base_url=BASE,
        api_version=API_VERSION,
        client_args={"verify": ssl_context(), "http2": HTTP2},
        retry_options=types.HttpRetryOptions(attempts=1),
    ),
)

WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters_json_schema={"type": "object", "properties": {"query": {"type": "string"}}})])


def path(model, method):
    return "/%s/models/%s:%s" % (API_VERSION, model, method)


def finish_of(candidate):
    reason = candidate.finish_reason
    return getattr(reason, "value", reason)


def tool_calls_of(parts):
    # Gemini's function calls carry no id: the span's tool call has none either.
    return [{"id": None, "name": p.function_call.name,
             "arguments": json.dumps(dict(p.function_call.args))}
            for p in parts if p.function_call]


def generate(name, prompt, model="gemini-2.5-flash", stream=False, tools=None, **config):
    cfg = types.GenerateContentConfig(system_instruction="You are terse.", tools=tools, **config)
    base = dict(path=path(model, "streamGenerateContent" if stream else "generateContent"),
                provider="gcp.gemini", operation="chat", model=model, prompt=prompt,
                stream=stream, temperature=config.get("temperature"),
                max_tokens=config.get("max_output_tokens"))
    base = {k: v for k, v in base.items() if v is not None}
    if not stream:
        r = client.models.generate_content(model=model, contents=prompt, config=cfg)
        candidate = r.candidates[0]
        parts = candidate.content.parts or []
        emit(name, **base, status=200, response_id=r.response_id, response_model=r.model_version,
             text="".join(p.text for p in parts if p.text and not p.thought),
             tool_calls=tool_calls_of(parts), finish_reason=finish_of(candidate),
             input_tokens=r.usage_metadata.prompt_token_count,
             output_tokens=r.usage_metadata.candidates_token_count)
        return
    text, calls, finish, usage, rid, rmodel = [], [], None, None, None, None
    for chunk in client.models.generate_content_stream(model=model, contents=prompt, config=cfg):
        rid, rmodel = chunk.response_id, chunk.model_version
        usage = chunk.usage_metadata or usage
        for candidate in chunk.candidates or []:
            parts = candidate.content.parts if candidate.content else []
            text.extend(p.text for p in parts or [] if p.text and not p.thought)
            calls.extend(tool_calls_of(parts or []))
            finish = finish_of(candidate) or finish
    emit(name, **base, status=200, response_id=rid, response_model=rmodel, text="".join(text),
         tool_calls=calls, finish_reason=finish, input_tokens=usage.prompt_token_count,
         output_tokens=usage.candidates_token_count)


def failing(name, prompt, expected_status, model="gemini-2.5-flash"):
    try:
        client.models.generate_content(model=model, contents=prompt)
    except errors.APIError as e:
        if e.code != expected_status:
            sys.exit("%s: expected HTTP %d, got %s" % (name, expected_status, e.code))
        emit(name, path=path(model, "generateContent"), provider="gcp.gemini", operation="chat",
             model=model, prompt=prompt, stream=False, status=e.code, error_type=e.status, error_message=e.message)
        return
    sys.exit("%s: expected an APIError" % name)


def interrupted(name):
    """A stream the server cuts off half-way: the client keeps what arrived."""
    model, prompt = "gemini-2.5-flash", "%s: tell a long story [cut]" % name
    text, rid, rmodel = [], None, None
    try:
        for chunk in client.models.generate_content_stream(model=model, contents=prompt):
            rid, rmodel = chunk.response_id, chunk.model_version
            text.append(chunk.text or "")
    except Exception as e:  # the transport's own error type for a cut stream
        emit(name, path=path(model, "streamGenerateContent"), provider="gcp.gemini",
             operation="chat", model=model, prompt=prompt, stream=True, status=200,
             response_id=rid, response_model=rmodel, text="".join(text), interrupted=True,
             error=type(e).__name__)
        return
    sys.exit("%s: expected the stream to fail" % name)


SCENARIOS = {
    "generate": lambda n: generate(n, "%s: what is the capital of Italy?" % n, temperature=0.5,
                                   max_output_tokens=256),
    "generate_stream": lambda n: generate(n, "%s: count to seven slowly" % n,
                                          model="gemini-2.5-pro", stream=True),
    "generate_tool": lambda n: generate(n, "%s: weather in Rome" % n, tools=[WEATHER]),
    "generate_tool_stream": lambda n: generate(n, "%s: weather in Oslo" % n, stream=True,
                                               model="gemini-2.0-flash", tools=[WEATHER]),
    "generate_stream_split": lambda n: generate(n, "%s: split events [split]" % n, stream=True,
                                                model="gemini-2.0-flash-lite"),
    "generate_429": lambda n: failing(n, "%s: too many [429]" % n, 429),
    "generate_500": lambda n: failing(n, "%s: broken [500]" % n, 500, model="gemini-1.5-pro"),
    "generate_404": lambda n: failing(n, "%s: no such model" % n, 404, model="missing-gemini"),
    "generate_interrupted": interrupted,
}

run_scenarios(SCENARIOS, sys.argv[1:])
