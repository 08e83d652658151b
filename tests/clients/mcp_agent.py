"""An agent: an LLM (the mock, through the openai SDK) that calls the tools of an MCP server
(through the official `mcp` package's client).

    python mcp_agent.py stdio           # starts mcp_server.py and talks to it over its pipes
    python mcp_agent.py http URL        # talks to a streamable-HTTP server at URL

The prompt carries the mock's `[once]`: the model asks for the server's first tool, the agent
calls it over MCP and sends the result back, the model answers. Prints one JSON line per LLM
call (see common.emit), and for the tool call a line `tool {...}` with what it asked and got,
and when (Unix ns around the MCP request).
"""

import asyncio
import json
import os
import sys
import time

import httpx2
import openai
from mcp import Client, StdioServerParameters

from common import API_KEY, BASE, TIMEOUT, emit, ssl_context

llm = openai.OpenAI(
    api_key=API_KEY,
    base_url=BASE + "/v1",
    max_retries=0,
    timeout=TIMEOUT,
    http_client=httpx2.Client(verify=ssl_context(), timeout=TIMEOUT),
)


def chat(messages, tools):
    response = llm.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    choice = response.choices[0]
    emit(
        "mcp_agent",
        id=response.id,
        text=choice.message.content or "",
        finish_reason=choice.finish_reason,
        usage={
            "input_tokens": response.usage.prompt_tokens,
            "output_tokens": response.usage.completion_tokens,
        },
    )
    return choice.message


async def main():
    if sys.argv[1] == "stdio":
        here = os.path.dirname(os.path.abspath(__file__))
        server = StdioServerParameters(
            command=sys.executable, args=[os.path.join(here, "mcp_server.py"), "stdio"]
        )
    else:
        server = sys.argv[2]
    async with Client(server, mode="legacy") as client:
        listed = await client.list_tools()
        tools = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description or "",
                    "parameters": tool.input_schema,
                },
            }
            for tool in listed.tools
        ]
        messages = [{"role": "user", "content": "[once] what is the weather in Paris"}]
        asked = chat(messages, tools)
        messages.append(asked.model_dump(exclude_none=True))
        for call in asked.tool_calls or []:
            arguments = json.loads(call.function.arguments)
            start = time.time_ns()
            result = await client.call_tool(call.function.name, arguments)
            end = time.time_ns()
            text = "".join(part.text for part in result.content if part.type == "text")
            record = {
                "id": call.id,
                "name": call.function.name,
                "arguments": arguments,
                "result": text,
                "start": start,
                "end": end,
                "pid": os.getpid(),
            }
            print("tool " + json.dumps(record), flush=True)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
        chat(messages, tools)


asyncio.run(main())
