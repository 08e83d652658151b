"""Calls through boto3's bedrock-runtime client (botocore: SigV4-signed requests, event-stream
responses), with endpoint_url pointing at the mock server and its CA trusted. The session token
holds the canary API key, so a leaked X-Amz-Security-Token fails the test like a leaked key.

Usage: bedrock_calls.py SCENARIO...   (see SCENARIOS below)
"""

import json
import sys
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from common import API_KEY, BASE, CA, TIMEOUT, emit, run_scenarios

client = boto3.client(
    "bedrock-runtime",
    region_name="us-east-1",
    endpoint_url=BASE,
    verify=CA,
    aws_access_key_id="AKIAMOCK0000EXAMPLE",
    aws_secret_access_key="mock-secret-access-key-0123456789",
    aws_session_token="session-" + API_KEY,
    config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=TIMEOUT),
)

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
WEATHER = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                                   "inputSchema": {"json": {"type": "object",
                                                            "properties": {"query": {"type": "string"}}}}}}]}


def path(model, action):
    # botocore percent-encodes the model id (':' becomes %3A).
    return "/model/%s/%s" % (quote(model, safe=""), action)


def record(name, model, action, prompt, stream, **fields):
    emit(name, path=path(model, action), provider="aws.bedrock", operation="chat", model=model,
         prompt=prompt, stream=stream, **fields)


def tool_call(tool_use):
    return {"id": tool_use["toolUseId"], "name": tool_use["name"],
            "arguments": json.dumps(tool_use["input"])}


def converse(name, prompt, model=NOVA, stream=False, tools=None):
    kwargs = dict(modelId=model, messages=[{"role": "user", "content": [{"text": prompt}]}],
                  system=[{"text": "You are terse."}],
                  inferenceConfig={"maxTokens": 300, "temperature": 0.2})
    if tools:
        kwargs["toolConfig"] = tools
    fields = dict(max_tokens=300, temperature=0.2, response_id=None, response_model=None)
    if not stream:
        r = client.converse(**kwargs)
        blocks = r["output"]["message"]["content"]
        record(name, model, "converse", prompt, False, **fields,
               status=r["ResponseMetadata"]["HTTPStatusCode"],
               text="".join(b.get("text", "") for b in blocks),
               tool_calls=[tool_call(b["toolUse"]) for b in blocks if "toolUse" in b],
               finish_reason=r["stopReason"], input_tokens=r["usage"]["inputTokens"],
               output_tokens=r["usage"]["outputTokens"])
        return
    r = client.converse_stream(**kwargs)
    text, tools_seen, finish, usage = [], {}, None, None
    for event in r["stream"]:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = start["start"].get("toolUse")
            if tool:
                tools_seen[start["contentBlockIndex"]] = {"toolUseId": tool["toolUseId"],
                                                          "name": tool["name"], "input": ""}
        elif "contentBlockDelta" in event:
            delta = event["contentBlockDelta"]
            if "text" in delta["delta"]:
                text.append(delta["delta"]["text"])
            elif "toolUse" in delta["delta"]:
                tools_seen[delta["contentBlockIndex"]]["input"] += delta["delta"]["toolUse"]["input"]
        elif "messageStop" in event:
            finish = event["messageStop"]["stopReason"]
        elif "metadata" in event:
            usage = event["metadata"]["usage"]
    calls = [{"id": t["toolUseId"], "name": t["name"], "arguments": t["input"]}
             for _, t in sorted(tools_seen.items())]
    record(name, model, "converse-stream", prompt, True, **fields,
           status=r["ResponseMetadata"]["HTTPStatusCode"], text="".join(text), tool_calls=calls,
           finish_reason=finish, input_tokens=usage["inputTokens"],
           output_tokens=usage["outputTokens"])


def invoke(name, prompt, stream):
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 400,
                       "messages": [{"role": "user", "content": prompt}]})
    fields = dict(max_tokens=400, tool_calls=[])
    if not stream:
        r = client.invoke_model(modelId=CLAUDE, body=body, contentType="application/json",
                                accept="application/json")
        m = json.loads(r["body"].read())
        record(name, CLAUDE, "invoke", prompt, False, **fields,
               status=r["ResponseMetadata"]["HTTPStatusCode"], response_id=m["id"],
               response_model=m["model"],
               text="".join(b["text"] for b in m["content"] if b["type"] == "text"),
               finish_reason=m["stop_reason"], input_tokens=m["usage"]["input_tokens"],
               output_tokens=m["usage"]["output_tokens"])
        return
    r = client.invoke_model_with_response_stream(modelId=CLAUDE, body=body,
                                                 contentType="application/json")
    text, start, delta = [], None, None
    for event in r["body"]:
        chunk = json.loads(event["chunk"]["bytes"])
        if chunk["type"] == "message_start":
            start = chunk["message"]
        elif chunk["type"] == "content_block_delta" and chunk["delta"]["type"] == "text_delta":
            text.append(chunk["delta"]["text"])
        elif chunk["type"] == "message_delta":
            delta = chunk
    record(name, CLAUDE, "invoke-with-response-stream", prompt, True, **fields,
           status=r["ResponseMetadata"]["HTTPStatusCode"], response_id=start["id"],
           response_model=start["model"], text="".join(text),
           finish_reason=delta["delta"]["stop_reason"],
           input_tokens=start["usage"]["input_tokens"],
           output_tokens=delta["usage"]["output_tokens"])


def failing(name, prompt, expected_status, model=NOVA):
    try:
        client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": prompt}]}])
    except ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        if status != expected_status:
            sys.exit("%s: expected HTTP %d, got %s" % (name, expected_status, status))
        record(name, model, "converse", prompt, False, status=status,
               error_type=e.response["Error"]["Code"], error_message=e.response["Error"]["Message"])
        return
    sys.exit("%s: expected a ClientError" % name)


SCENARIOS = {
    "converse": lambda n: converse(n, "%s: what is the capital of Spain?" % n),
    "converse_stream": lambda n: converse(n, "%s: count to eight" % n, stream=True),
    "converse_tool": lambda n: converse(n, "%s: weather in Lima" % n, tools=WEATHER),
    "converse_tool_stream": lambda n: converse(n, "%s: weather in Quito" % n, stream=True,
                                               model="amazon.nova-pro-v1:0", tools=WEATHER),
    "converse_stream_split": lambda n: converse(n, "%s: split frames [split]" % n, stream=True,
                                                model="amazon.nova-micro-v1:0"),
    "invoke": lambda n: invoke(n, "%s: hello claude on bedrock" % n, stream=False),
    "invoke_stream": lambda n: invoke(n, "%s: stream claude on bedrock" % n, stream=True),
    "converse_429": lambda n: failing(n, "%s: throttled [429]" % n, 429),
    "converse_500": lambda n: failing(n, "%s: broken [500]" % n, 500, model="amazon.nova-pro-v1:0"),
}

run_scenarios(SCENARIOS, sys.argv[1:])
