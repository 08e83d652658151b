"""Calls with Python's standard library only (http.client, one kept-alive connection; HTTPS or,
when MOCK_BASE is http://, plaintext).

Usage: stdlib_calls.py SCENARIO...   (chat_json, chat_markup, messages_json, chat_after_download,
big_stream_paused)
"""

import http.client
import json
import os
import sys
import time
import urllib.parse

from common import API_KEY, BASE, TIMEOUT, emit, note, run_scenarios, ssl_context

url = urllib.parse.urlsplit(BASE)
if url.scheme == "http":
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
else:
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ssl_context(), timeout=TIMEOUT)


def post(path, body, headers):
    payload = json.dumps(body).encode()
    conn.request("POST", path, body=payload, headers={"content-type": "application/json", **headers})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def chat_json(name):
    prompt = "%s: what is the capital of France?" % name
    status, body = post(
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}], "temperature": 0.5},
        {"authorization": "Bearer " + API_KEY},
    )
    choice = body["choices"][0]
    emit(name, path="/v1/chat/completions", model="gpt-4o", prompt=prompt, stream=False, temperature=0.5,
         status=status, response_id=body["id"], response_model=body["model"],
         text=choice["message"]["content"], tool_calls=[], finish_reason=choice["finish_reason"],
         input_tokens=body["usage"]["prompt_tokens"], output_tokens=body["usage"]["completion_tokens"])


# Markup and script in a prompt (and so in the mock's answer, which repeats its first words):
# whatever shows it (the web view) must show it as text.
MARKUP = ('<img src=x onerror="window.__injected=1;alert(1)"> <script>window.__injected=2</script> '
          '<b>bold?</b> <a href="javascript:alert(3)">link</a>')


def chat_markup(name):
    prompt = "%s %s what is the capital of France?" % (MARKUP, name)
    status, body = post(
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [
            {"role": "system", "content": '</pre><svg onload="window.__injected=4">'},
            {"role": "user", "content": prompt}]},
        {"authorization": "Bearer " + API_KEY},
    )
    choice = body["choices"][0]
    emit(name, path="/v1/chat/completions", model="gpt-4o", prompt=prompt, stream=False,
         status=status, response_id=body["id"], response_model=body["model"],
         text=choice["message"]["content"], tool_calls=[], finish_reason=choice["finish_reason"],
         input_tokens=body["usage"]["prompt_tokens"], output_tokens=body["usage"]["completion_tokens"])


def messages_json(name):
    prompt = "%s: name three colours" % name
    status, body = post(
        "/v1/messages",
        {"model": "claude-sonnet-5", "max_tokens": 300, "system": "Be terse.",
         "messages": [{"role": "user", "content": prompt}]},
        {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"},
    )
    emit(name, path="/v1/messages", model="claude-sonnet-5", prompt=prompt, stream=False, max_tokens=300,
         status=status, response_id=body["id"], response_model=body["model"],
         text="".join(b["text"] for b in body["content"] if b["type"] == "text"), tool_calls=[],
         finish_reason=body["stop_reason"], input_tokens=body["usage"]["input_tokens"],
         output_tokens=body["usage"]["output_tokens"])


def chat_after_download(name):
    """A 64 MiB non-LLM download, then a chat call on the same kept-alive connection."""
    conn.request("GET", "/files/64")
    response = conn.getresponse()
    size = len(response.read())
    if response.status != 200 or size != 64 << 20:
        raise SystemExit("download failed: status %d, %d bytes" % (response.status, size))
    chat_json(name)


def big_stream_paused(name):
    """Reads the start of a long streamed answer, prints `paused`, waits for the file
    $RESUME_FILE, then reads the rest: an observer started meanwhile joins the connection in the
    middle of a response. No record: the call began before anything watched it."""
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "%s: a long answer [big]" % name}]}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"content-type": "application/json", "authorization": "Bearer " + API_KEY})
    response = conn.getresponse()
    response.read(256)
    note("paused")
    while not os.path.exists(os.environ["RESUME_FILE"]):
        time.sleep(0.05)
    response.read()


run_scenarios({"chat_json": chat_json, "chat_markup": chat_markup, "messages_json": messages_json,
               "chat_after_download": chat_after_download,
               "big_stream_paused": big_stream_paused}, sys.argv[1:])
conn.close()
