"""An agent that delegates to a sub-agent: a program of its own, started as a shell command.

    python sub_agent.py parent    # asks the model, which asks for `Bash` running
                                  # `python sub_agent.py child`; runs it, sends its output back
    python sub_agent.py child     # the sub-agent: a two-call conversation of its own

The parent's prompt carries the mock's `[subagent] COMMAND`. Prints one JSON line per LLM call
(see common.emit; the child's lines come through the parent, which prints what the command
printed), and for the tool call a line `tool {...}` with the command and when it ran (Unix ns).
"""

import json
import os
import shlex
import subprocess
import sys
import time

import httpx2
import openai

from common import API_KEY, BASE, TIMEOUT, emit, ssl_context

llm = openai.OpenAI(
    api_key=API_KEY,
    base_url=BASE + "/v1",
    max_retries=0,
    timeout=TIMEOUT,
    http_client=httpx2.Client(verify=ssl_context(), timeout=TIMEOUT),
)

BASH = {
    "type": "function",
    "function": {
        "name": "Bash",
        "description": "Runs a shell command",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
}


def chat(role, messages, tools=None):
    extra = {"tools": tools} if tools else {}
    response = llm.chat.completions.create(model="gpt-4o-mini", messages=messages, **extra)
    choice = response.choices[0]
    emit(
        role,
        id=response.id,
        text=choice.message.content or "",
        finish_reason=choice.finish_reason,
    )
    return choice.message


def parent():
    command = shlex.join([sys.executable, os.path.abspath(__file__), "child"])
    messages = [{"role": "user", "content": "delegate this [subagent] " + command}]
    asked = chat("parent", messages, [BASH])
    messages.append(asked.model_dump(exclude_none=True))
    for call in asked.tool_calls or []:
        arguments = json.loads(call.function.arguments)
        start = time.time_ns()
        done = subprocess.run(["bash", "-c", arguments["command"]], capture_output=True, text=True)
        end = time.time_ns()
        sys.stdout.write(done.stdout)
        record = {
            "id": call.id,
            "command": arguments["command"],
            "exit_code": done.returncode,
            "start": start,
            "end": end,
            "pid": os.getpid(),
        }
        print("tool " + json.dumps(record), flush=True)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": done.stdout})
    chat("parent", messages, [BASH])


def child():
    messages = [{"role": "user", "content": "summarise the weather in Paris"}]
    answer = chat("child", messages)
    messages.append({"role": "assistant", "content": answer.content or ""})
    messages.append({"role": "user", "content": "and in Lyon"})
    chat("child", messages)


{"parent": parent, "child": child}[sys.argv[1]]()
