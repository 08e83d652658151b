#!/usr/bin/env python3
"""Many LLM-shaped SSE streams open at once, for the memory measurement of bench/bench.py.

A TLS server and N clients in one asyncio process on 127.0.0.1 (Python's ssl module: the system
libssl, which the observer probes). Every client sends a streaming chat request and reads the
response head; the server holds every stream open until all N have started, then sends each
EVENTS SSE events round-robin and ends them. Prints one JSON line.
"""
import argparse
import asyncio
import json
import resource
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

BODY = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me a story"}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-bench\r\n"
    b"Content-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = (
    b'data: {"id":"chatcmpl-streams","object":"chat.completion.chunk","model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"word "}}]}\n\n'
)
LAST = (
    b'data: {"id":"chatcmpl-streams","object":"chat.completion.chunk","model":"gpt-4o-mini",'
    b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":20,"total_tokens":25}}\n\ndata: [DONE]\n\n'
)


def chunk(payload):
    return b"%x\r\n%s\r\n" % (len(payload), payload)


async def main(streams, events):
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=api.openai.com"],
                       check=True, capture_output=True)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE

    started = 0
    all_started = asyncio.Event()
    writers = []

    async def handle(reader, writer):
        await reader.readexactly(len(REQUEST))
        writer.write(HEAD)
        await writer.drain()
        writers.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx, backlog=streams)
    port = server.sockets[0].getsockname()[1]

    async def client():
        nonlocal started
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="api.openai.com")
        writer.write(REQUEST)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        started += 1
        if started == streams:
            all_started.set()
        body = await reader.readuntil(b"0\r\n\r\n")
        writer.close()
        return len(body)

    begin = time.monotonic()
    clients = [asyncio.create_task(client()) for _ in range(streams)]
    await all_started.wait()
    opened_at = time.monotonic()
    for _ in range(events):
        for writer in writers:
            writer.write(chunk(EVENT))
        await asyncio.gather(*(w.drain() for w in writers))
    for writer in writers:
        writer.write(chunk(LAST) + b"0\r\n\r\n")
    await asyncio.gather(*(w.drain() for w in writers))
    sizes = await asyncio.gather(*clients)
    for writer in writers:
        writer.close()
    server.close()
    print(json.dumps({"streams": streams, "events": events, "open_s": round(opened_at - begin, 3),
                      "total_s": round(time.monotonic() - begin, 3), "bytes": sum(sizes)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.streams + 64)), hard))
    asyncio.run(main(args.streams, args.events))
