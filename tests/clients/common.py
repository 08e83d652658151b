"""Shared helpers for the end-to-end test clients.

Every client reads the mock server from the environment (MOCK_BASE=https://127.0.0.1:PORT,
MOCK_CA=path of the CA certificate to trust, MOCK_API_KEY) and prints one JSON line per call
with what it saw, so the tests can compare the observer's spans with it. Other output lines
never start with '{'.
"""

import json
import os
import ssl
import sys
import threading

BASE = os.environ["MOCK_BASE"]
CA = os.environ["MOCK_CA"]
API_KEY = os.environ.get("MOCK_API_KEY", "sk-canary-4f1d9a7e")
TIMEOUT = 60.0
_emit_lock = threading.Lock()

# A function tool in the OpenAI Chat Completions shape.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def ssl_context():
    return ssl.create_default_context(cafile=CA)


def _comm():
    with open("/proc/self/comm") as f:
        return f.read().strip()


def emit(call, **fields):
    """Print one call record. Call it from the thread that made the call."""
    record = {
        "call": call,
        "pid": os.getpid(),
        "tid": threading.get_native_id(),
        "comm": _comm(),
        "exe": os.path.basename(os.path.realpath("/proc/self/exe")),
    }
    record.update(fields)
    with _emit_lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def note(line):
    """Progress output for the harness (never starts with '{')."""
    with _emit_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def big_prompt(min_bytes):
    """A user message of at least min_bytes bytes."""
    words = []
    size = 0
    i = 0
    while size < min_bytes:
        word = "filler%d" % i
        words.append(word)
        size += len(word) + 1
        i += 1
    return "big request: " + " ".join(words)


def run_scenarios(scenarios, names):
    """Runs the named scenarios in order; `parallelN:NAME` runs NAME in N threads at once."""
    for name in names:
        if name.startswith("parallel"):
            count, inner = name[len("parallel"):].split(":", 1)
            barrier = threading.Barrier(int(count))

            def worker(i, inner=inner, barrier=barrier):
                barrier.wait()
                scenarios[inner]("%s#%d" % (inner, i))

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(int(count))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            if name not in scenarios:
                sys.exit("unknown scenario %r; known: %s" % (name, ", ".join(sorted(scenarios))))
            scenarios[name](name)
