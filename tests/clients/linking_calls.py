"""Agent-shaped call sequences through the official SDKs, for the linking tests.

Usage: linking_calls.py SCENARIO...   (see SCENARIOS below)

Each call prints one record (see common.emit) with `conversation` (which sequence it belongs
to, as the test expects the observer to group them) and `turn`.
"""

import asyncio
import json
import sys
import threading

import anthropic
import httpx2
import openai

from common import API_KEY, BASE, TIMEOUT, WEATHER_TOOL, emit, run_scenarios, ssl_context

SYSTEM = "You are a terse assistant."
MODEL = "gpt-4o"
CLAUDE = "claude-sonnet-5"


def openai_client():
    return openai.OpenAI(api_key=API_KEY, base_url=BASE + "/v1", max_retries=0, timeout=TIMEOUT,
                         http_client=httpx2.Client(verify=ssl_context(), timeout=TIMEOUT))


def record(name, conversation, turn, path, model, response_id, usage=None, **extra):
    tokens = {}
    if usage is not None:
        tokens = {"input_tokens": getattr(usage, "prompt_tokens", None),
                  "output_tokens": getattr(usage, "completion_tokens", None)}
    emit(name, conversation=conversation, turn=turn, path=path, model=model, status=200,
         response_id=response_id, **tokens, **extra)


def chat_conversation(client, name, conversation, turns, opening):
    """A multi-turn chat: every request carries the whole history and the last answer."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": opening}]
    for turn in range(1, turns + 1):
        r = client.chat.completions.create(model=MODEL, messages=messages)
        answer = r.choices[0].message.content
        record(name, conversation, turn, "/v1/chat/completions", MODEL, r.id, r.usage)
        messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": "%s, follow-up %d" % (opening, turn)})


def conversation(name):
    chat_conversation(openai_client(), name, name, 4, "%s: plan a trip to Lisbon" % name)


def anthropic_conversation(name):
    client = anthropic.Anthropic(api_key=API_KEY, base_url=BASE, max_retries=0, timeout=TIMEOUT,
                                 http_client=httpx2.Client(verify=ssl_context(), timeout=TIMEOUT))
    messages = [{"role": "user", "content": "%s: name three rivers" % name}]
    for turn in range(1, 5):
        # The system prompt changes between turns, as agents' often do.
        system = [{"type": "text", "text": "%s (turn %d)" % (SYSTEM, turn),
                   "cache_control": {"type": "ephemeral"}}]
        kwargs = dict(model=CLAUDE, max_tokens=256, system=system, messages=messages)
        if turn % 2 == 0:
            with client.messages.stream(**kwargs) as stream:
                m = stream.get_final_message()
        else:
            m = client.messages.create(**kwargs)
        record(name, name, turn, "/v1/messages", CLAUDE, m.id)
        messages.append({"role": "assistant", "content": [b.model_dump() for b in m.content]})
        messages.append({"role": "user", "content": "%s: and the next one (%d)" % (name, turn)})


def tool_round_trip(name):
    """The model asks for a tool; the program runs it and sends the result back."""
    client = openai_client()
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "%s: weather in Paris?" % name}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    message = r.choices[0].message
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
             for c in message.tool_calls or []]
    record(name, name, 1, "/v1/chat/completions", MODEL, r.id, r.usage, tool_calls=calls)
    messages.append(message.model_dump(exclude_none=True))
    for call in calls:
        threading.Event().wait(0.3)  # the tool's work
        messages.append({"role": "tool", "tool_call_id": call["id"],
                         "content": json.dumps({"temperature_c": 18})})
    r = client.chat.completions.create(model=MODEL, messages=messages)
    record(name, name, 2, "/v1/chat/completions", MODEL, r.id, r.usage)


def traceparent(name):
    """An application traced already: its context rides on the request."""
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = openai_client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "%s: hello" % name}],
        extra_headers={"traceparent": "00-%s-%s-01" % (trace_id, span_id)})
    record(name, name, 1, "/v1/chat/completions", MODEL, r.id, trace_id=trace_id,
           parent_span_id=span_id)


def responses_chain(name):
    """Responses API conversation state kept by the server: only previous_response_id links."""
    client = openai_client()
    previous = None
    for turn in range(1, 4):
        r = client.responses.create(model="gpt-4.1", input="%s: question %d" % (name, turn),
                                    previous_response_id=previous)
        record(name, name, turn, "/v1/responses", "gpt-4.1", r.id)
        previous = r.id


def threads8(name):
    """Eight threads, each its own two-turn conversation, all saying the same, at once."""
    client = openai_client()
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        chat_conversation(client, name, "%s#%d" % (name, i), 2, "same question for everyone")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def async20(name):
    """Twenty two-turn conversations interleaved on one event loop thread, separate connections."""

    async def one(client, i):
        opening = "%s stream %d: tell me a fact" % (name, i)
        messages = [{"role": "user", "content": opening}]
        for turn in (1, 2):
            stream = await client.chat.completions.create(model=MODEL, messages=messages,
                                                          stream=True)
            text, rid = [], None
            async for chunk in stream:
                rid = chunk.id
                for choice in chunk.choices:
                    text.append(choice.delta.content or "")
            record(name, "%s#%d" % (name, i), turn, "/v1/chat/completions", MODEL, rid)
            messages += [{"role": "assistant", "content": "".join(text)},
                         {"role": "user", "content": "%s, more" % opening}]

    async def main():
        limits = httpx2.Limits(max_connections=20, max_keepalive_connections=20)
        http = httpx2.AsyncClient(verify=ssl_context(), timeout=TIMEOUT, limits=limits)
        client = openai.AsyncOpenAI(api_key=API_KEY, base_url=BASE + "/v1", max_retries=0,
                                    timeout=TIMEOUT, http_client=http)
        await asyncio.gather(*(one(client, i) for i in range(20)))

    asyncio.run(main())


SCENARIOS = {
    "conversation": conversation,
    "anthropic_conversation": anthropic_conversation,
    "tool_round_trip": tool_round_trip,
    "traceparent": traceparent,
    "responses_chain": responses_chain,
    "threads8": threads8,
    "async20": async20,
}

run_scenarios(SCENARIOS, sys.argv[1:])
