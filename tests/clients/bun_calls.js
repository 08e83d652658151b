// Calls made with the runtime's fetch, one process for all calls: Bun (BoringSSL inside the bun
// executable, no symbols) or Node (OpenSSL in the node executable; the mock's CA comes from
// NODE_EXTRA_CA_CERTS). Prints one JSON record per call, like the Python clients (common.py).
//
// Bun does its HTTP I/O on its own "HTTP Client" thread, Node on its main thread: the record
// names that thread, since that is where the TLS reads and writes happen.
//
// Usage: bun|node bun_calls.js SCENARIO...   (chat_json, chat_sse, messages_json, messages_sse)
import { readFileSync, readdirSync } from "node:fs";
import { basename } from "node:path";

const BASE = process.env.MOCK_BASE;
const CA = readFileSync(process.env.MOCK_CA, "utf8");
const API_KEY = process.env.MOCK_API_KEY ?? "sk-canary-4f1d9a7e";

function comm(path) {
  return readFileSync(path, "utf8").trim();
}

// The thread that does Bun's network I/O.
function httpThread() {
  for (const tid of readdirSync("/proc/self/task")) {
    if (comm(`/proc/self/task/${tid}/comm`).startsWith("HTTP Client")) return Number(tid);
  }
  throw new Error("no HTTP Client thread in /proc/self/task");
}

function emit(call, fields) {
  const record = {
    call,
    pid: process.pid,
    tid: typeof Bun === "undefined" ? process.pid : httpThread(),
    comm: comm("/proc/self/comm"),
    exe: basename(process.execPath),
    ...fields,
  };
  process.stdout.write(JSON.stringify(record) + "\n");
}

async function post(path, body, headers) {
  const response = await fetch(BASE + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    tls: { ca: CA }, // Bun's option; Node reads NODE_EXTRA_CA_CERTS
  });
  return { status: response.status, payload: await response.text() };
}

function sseData(payload) {
  return payload
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).trim())
    .filter((data) => data !== "[DONE]")
    .map((data) => JSON.parse(data));
}

async function openaiChat(name, prompt, stream, extra = {}) {
  const model = stream ? "gpt-4o-mini" : "gpt-4o";
  const body = { model, messages: [{ role: "user", content: prompt }], ...extra };
  if (stream) Object.assign(body, { stream: true, stream_options: { include_usage: true } });
  const { status, payload } = await post("/v1/chat/completions", body, {
    authorization: "Bearer " + API_KEY,
  });
  let text, finish, usage, id, responseModel;
  if (stream) {
    const chunks = sseData(payload);
    const choices = chunks.filter((c) => c.choices.length);
    text = choices.map((c) => c.choices[0].delta.content ?? "").join("");
    finish = choices.map((c) => c.choices[0].finish_reason).filter(Boolean).at(-1);
    usage = chunks.filter((c) => c.usage).at(-1).usage;
    [id, responseModel] = [chunks[0].id, chunks[0].model];
  } else {
    const r = JSON.parse(payload);
    [text, finish, usage] = [r.choices[0].message.content, r.choices[0].finish_reason, r.usage];
    [id, responseModel] = [r.id, r.model];
  }
  emit(name, {
    path: "/v1/chat/completions", model, prompt, stream, status, response_id: id,
    response_model: responseModel, text, tool_calls: [], finish_reason: finish,
    input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens, ...extra,
  });
}

async function anthropicMessages(name, prompt, stream) {
  const model = "claude-haiku-4-5";
  const body = { model, max_tokens: 512, messages: [{ role: "user", content: prompt }], stream };
  const { status, payload } = await post("/v1/messages", body, {
    "x-api-key": API_KEY,
    "anthropic-version": "2023-06-01",
  });
  let text, id, responseModel, finish, inputTokens, outputTokens;
  if (stream) {
    const events = sseData(payload);
    const start = events.find((e) => e.type === "message_start").message;
    const delta = events.find((e) => e.type === "message_delta");
    text = events
      .filter((e) => e.type === "content_block_delta" && e.delta.type === "text_delta")
      .map((e) => e.delta.text)
      .join("");
    [id, responseModel, finish] = [start.id, start.model, delta.delta.stop_reason];
    [inputTokens, outputTokens] = [start.usage.input_tokens, delta.usage.output_tokens];
  } else {
    const m = JSON.parse(payload);
    text = m.content.filter((b) => b.type === "text").map((b) => b.text).join("");
    [id, responseModel, finish] = [m.id, m.model, m.stop_reason];
    [inputTokens, outputTokens] = [m.usage.input_tokens, m.usage.output_tokens];
  }
  emit(name, {
    path: "/v1/messages", model, prompt, stream, status, response_id: id,
    response_model: responseModel, text, tool_calls: [], finish_reason: finish,
    input_tokens: inputTokens, output_tokens: outputTokens, max_tokens: 512,
  });
}

const SCENARIOS = {
  chat_json: (n) => openaiChat(n, `${n}: hello from bun`, false, { temperature: 0.3, max_tokens: 100 }),
  chat_sse: (n) => openaiChat(n, `${n}: stream from bun`, true),
  messages_json: (n) => anthropicMessages(n, `${n}: hello claude from bun`, false),
  messages_sse: (n) => anthropicMessages(n, `${n}: stream claude from bun`, true),
};

for (const name of process.argv.slice(2)) {
  if (!SCENARIOS[name]) throw new Error(`unknown scenario ${name}`);
  await SCENARIOS[name](name);
}
