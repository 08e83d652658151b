// Calls made with the official OpenAI and Anthropic Node SDKs (from target/npm, named by
// NPM_MODULES), one process for all calls, made as soon as it starts. The mock's CA comes from
// NODE_EXTRA_CA_CERTS. Prints one JSON record per call, like the Python clients (common.py).
//
// Usage: node node_sdk_calls.mjs SCENARIO...   (chat_json, chat_sse, messages_json, messages_sse)
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(process.env.NPM_MODULES + "/");
const OpenAI = require("openai").default ?? require("openai");
const Anthropic = require("@anthropic-ai/sdk").default ?? require("@anthropic-ai/sdk");

const BASE = process.env.MOCK_BASE;
const API_KEY = process.env.MOCK_API_KEY ?? "sk-canary-4f1d9a7e";
const openai = new OpenAI({ apiKey: API_KEY, baseURL: BASE + "/v1", maxRetries: 0 });
const anthropic = new Anthropic({ apiKey: API_KEY, baseURL: BASE, maxRetries: 0 });

function emit(call, fields) {
  const record = {
    call,
    pid: process.pid,
    tid: process.pid,
    comm: readFileSync("/proc/self/comm", "utf8").trim(),
    exe: basename(process.execPath),
    ...fields,
  };
  process.stdout.write(JSON.stringify(record) + "\n");
}

async function chat(name, stream) {
  const model = stream ? "gpt-4o-mini" : "gpt-4o";
  const prompt = `${name}: ${stream ? "stream" : "hello"} from the openai node sdk`;
  const messages = [{ role: "user", content: prompt }];
  let text = "", finish, usage, id, responseModel;
  if (stream) {
    const chunks = await openai.chat.completions.create({
      model, messages, stream: true, stream_options: { include_usage: true },
    });
    for await (const chunk of chunks) {
      [id, responseModel] = [id ?? chunk.id, responseModel ?? chunk.model];
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices[0];
      if (choice) {
        text += choice.delta.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
    }
  } else {
    const r = await openai.chat.completions.create({ model, messages });
    [text, finish, usage] = [r.choices[0].message.content, r.choices[0].finish_reason, r.usage];
    [id, responseModel] = [r.id, r.model];
  }
  emit(name, {
    path: "/v1/chat/completions", model, prompt, stream, status: 200, response_id: id,
    response_model: responseModel, text, tool_calls: [], finish_reason: finish,
    input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens,
  });
}

async function messages(name, stream) {
  const model = "claude-haiku-4-5";
  const prompt = `${name}: ${stream ? "stream" : "hello"} from the anthropic node sdk`;
  const request = { model, max_tokens: 512, messages: [{ role: "user", content: prompt }] };
  const m = stream
    ? await anthropic.messages.stream(request).finalMessage()
    : await anthropic.messages.create(request);
  emit(name, {
    path: "/v1/messages", model, prompt, stream, status: 200, response_id: m.id,
    response_model: m.model, text: m.content.filter((b) => b.type === "text").map((b) => b.text).join(""),
    tool_calls: [], finish_reason: m.stop_reason, input_tokens: m.usage.input_tokens,
    output_tokens: m.usage.output_tokens, max_tokens: 512,
  });
}

const SCENARIOS = {
  chat_json: (n) => chat(n, false),
  chat_sse: (n) => chat(n, true),
  messages_json: (n) => messages(n, false),
  messages_sse: (n) => messages(n, true),
};

for (const name of process.argv.slice(2)) {
  if (!SCENARIOS[name]) throw new Error(`unknown scenario ${name}`);
  await SCENARIOS[name](name);
}
