"""A batch client: opens BATCH_CONNECTIONS TLS connections at once (asyncio, every handshake
before any request), then sends one chat completion on each, all at once. Its first hundreds of
probed calls carry no request: a whole-host watch must not take it for a busy non-LLM process.
"""

import asyncio
import json
import os
import sys
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(__file__))
from common import API_KEY, BASE, emit, note, ssl_context  # noqa: E402

CONNECTIONS = int(os.environ.get("BATCH_CONNECTIONS", "800"))
MODEL = "gpt-4o-mini"


async def call(reader, writer, index):
    prompt = f"batch item {index}"
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}]}).encode()
    host = urlparse(BASE).netloc
    writer.write(
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    answer = json.loads(await reader.readexactly(length))
    writer.close()
    choice = answer["choices"][0]
    emit("chat_json", path="/v1/chat/completions", model=MODEL, prompt=prompt, stream=False,
         status=status, response_id=answer["id"], response_model=answer["model"],
         text=choice["message"]["content"], tool_calls=[], finish_reason=choice["finish_reason"],
         input_tokens=answer["usage"]["prompt_tokens"], output_tokens=answer["usage"]["completion_tokens"])


async def main():
    url = urlparse(BASE)
    context = ssl_context()
    opened = await asyncio.gather(
        *(asyncio.open_connection(url.hostname, url.port, ssl=context) for _ in range(CONNECTIONS))
    )
    note(f"{len(opened)} connections open")
    await asyncio.gather(*(call(reader, writer, i) for i, (reader, writer) in enumerate(opened)))


asyncio.run(main())
