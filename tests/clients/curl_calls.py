"""Calls made by the system curl (OpenSSL), or by wget (GnuTLS) with HTTP_TOOL=wget, one
process per call.

This script only drives the tool: it writes the request body and headers to files (so the API
key is never on a command line), runs it, parses what it printed and emits the record with the
tool's pid (both are single-threaded, so the thread id is the pid).

Usage: curl_calls.py SCENARIO...   (chat_json, chat_sse, messages_json, messages_sse, chat_big_body)
"""

import json
import os
import subprocess
import sys
import tempfile

from common import API_KEY, BASE, CA, big_prompt, emit, run_scenarios

TOOL = os.environ.get("HTTP_TOOL", "curl")
CURL = os.environ.get("CURL", "/usr/bin/curl")
workdir = tempfile.mkdtemp(prefix="%s-calls-" % TOOL)


def curl(name, path, body, headers):
    """Runs one request with TOOL; returns (pid, status, body text)."""
    body_file = os.path.join(workdir, name + ".json")
    with open(body_file, "w") as f:
        json.dump(body, f)
    headers = {"content-type": "application/json", **headers}
    run = run_wget if TOOL == "wget" else run_curl
    pid, returncode, status, payload = run(name, BASE + path, body_file, headers)
    if returncode != 0:
        sys.exit("%s: %s exited with %d" % (name, TOOL, returncode))
    return pid, status, payload


def run_curl(name, url, body_file, headers):
    header_file = os.path.join(workdir, name + ".headers")
    with open(header_file, "w") as f:
        f.writelines("%s: %s\n" % item for item in headers.items())
    proc = subprocess.Popen(
        [CURL, "-sS", "-N", "--http1.1", "--max-time", "60", "--cacert", CA,
         "-H", "@" + header_file, "--data-binary", "@" + body_file,
         "-w", "\n@status=%{http_code}", url],
        stdout=subprocess.PIPE)
    out, _ = proc.communicate()
    payload, _, status = out.decode().rpartition("\n@status=")
    return proc.pid, proc.returncode, int(status), payload


def run_wget(name, url, body_file, headers):
    # Headers go through a wgetrc file: wget has no header-file option.
    rc_file = os.path.join(workdir, name + ".wgetrc")
    with open(rc_file, "w") as f:
        f.writelines("header = %s: %s\n" % item for item in headers.items())
    proc = subprocess.Popen(
        ["/usr/bin/wget", "-q", "-O", "-", "--server-response", "--content-on-error",
         "--timeout=60", "--tries=1", "--ca-certificate=" + CA, "--post-file=" + body_file, url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "WGETRC": rc_file})
    out, err = proc.communicate()
    statuses = [line.split()[1] for line in err.decode().splitlines()
                if line.strip().startswith("HTTP/")]
    # wget exits 8 on an HTTP error status it still printed.
    returncode = 0 if proc.returncode == 8 and statuses else proc.returncode
    return proc.pid, returncode, int(statuses[-1]) if statuses else 0, out.decode()


def sse_data(payload):
    """The parsed `data:` payloads of an SSE body (skipping [DONE])."""
    out = []
    for line in payload.splitlines():
        if line.startswith("data:"):
            data = line[len("data:"):].strip()
            if data != "[DONE]":
                out.append(json.loads(data))
    return out


def openai_chat(name, prompt, stream, **extra):
    model = "gpt-4o-mini" if stream else "gpt-4o"
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    pid, status, payload = curl(name, "/v1/chat/completions", body,
                                {"authorization": "Bearer " + API_KEY})
    if stream:
        chunks = sse_data(payload)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]][-1]
        usage = [c["usage"] for c in chunks if c.get("usage")][-1]
        rid, rmodel = chunks[0]["id"], chunks[0]["model"]
    else:
        r = json.loads(payload)
        text, finish, usage = r["choices"][0]["message"]["content"], r["choices"][0]["finish_reason"], r["usage"]
        rid, rmodel = r["id"], r["model"]
    emit(name, pid=pid, tid=pid, comm=TOOL, exe=TOOL, path="/v1/chat/completions", model=model,
         prompt=prompt, stream=stream, status=status, response_id=rid, response_model=rmodel, text=text,
         tool_calls=[], finish_reason=finish, input_tokens=usage["prompt_tokens"],
         output_tokens=usage["completion_tokens"], **extra)


def anthropic_messages(name, prompt, stream):
    model = "claude-haiku-4-5"
    body = {"model": model, "max_tokens": 512, "messages": [{"role": "user", "content": prompt}],
            "stream": stream}
    pid, status, payload = curl(name, "/v1/messages", body,
                                {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"})
    if stream:
        events = sse_data(payload)
        start = next(e for e in events if e["type"] == "message_start")["message"]
        delta = next(e for e in events if e["type"] == "message_delta")
        text = "".join(e["delta"]["text"] for e in events
                       if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta")
        rid, rmodel, finish = start["id"], start["model"], delta["delta"]["stop_reason"]
        input_tokens, output_tokens = start["usage"]["input_tokens"], delta["usage"]["output_tokens"]
    else:
        m = json.loads(payload)
        text = "".join(b["text"] for b in m["content"] if b["type"] == "text")
        rid, rmodel, finish = m["id"], m["model"], m["stop_reason"]
        input_tokens, output_tokens = m["usage"]["input_tokens"], m["usage"]["output_tokens"]
    emit(name, pid=pid, tid=pid, comm=TOOL, exe=TOOL, path="/v1/messages", model=model,
         prompt=prompt, stream=stream, status=status, response_id=rid, response_model=rmodel,
         text=text, tool_calls=[], finish_reason=finish, input_tokens=input_tokens,
         output_tokens=output_tokens, max_tokens=512)


SCENARIOS = {
    "chat_json": lambda n: openai_chat(n, "%s: hello from curl" % n, False, temperature=0.3,
                                       max_tokens=100),
    "chat_sse": lambda n: openai_chat(n, "%s: stream from curl" % n, True),
    "messages_json": lambda n: anthropic_messages(n, "%s: hello claude from curl" % n, False),
    "messages_sse": lambda n: anthropic_messages(n, "%s: stream claude from curl" % n, True),
    "chat_big_body": lambda n: openai_chat(n, big_prompt(110 * 1024), False),
}

run_scenarios(SCENARIOS, sys.argv[1:])
