//! Attribute keys: the OpenTelemetry GenAI semantic conventions, and the observer's own
//! (`observer.*`, plus `gen_ai.response.time_to_first_chunk`).

pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const OPERATION_NAME: &str = "gen_ai.operation.name";

/// What every request parameter's name starts with.
pub const REQUEST_PREFIX: &str = "gen_ai.request.";
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
pub const REQUEST_STREAM: &str = "gen_ai.request.stream";
pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub const REQUEST_TOP_K: &str = "gen_ai.request.top_k";
pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
pub const REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
pub const REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
pub const REQUEST_SEED: &str = "gen_ai.request.seed";
pub const REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
pub const REQUEST_ENCODING_FORMATS: &str = "gen_ai.request.encoding_formats";
pub const EMBEDDINGS_DIMENSION_COUNT: &str = "gen_ai.embeddings.dimension.count";
pub const OUTPUT_TYPE: &str = "gen_ai.output.type";
pub const CONVERSATION_ID: &str = "gen_ai.conversation.id";

pub const RESPONSE_ID: &str = "gen_ai.response.id";
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// Mean seconds between output chunks after the first (streams with two or more).
pub const RESPONSE_TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.response.time_per_output_chunk";

pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
pub const USAGE_CACHE_CREATION_INPUT_TOKENS: &str = "gen_ai.usage.cache_creation.input_tokens";
pub const USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";

pub const SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub const TOOL_DEFINITIONS: &str = "gen_ai.tool.definitions";

pub const ERROR_TYPE: &str = "error.type";

// Set by the span stage from the exchange, the process and the socket.
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
pub const NETWORK_PEER_PORT: &str = "network.peer.port";
pub const NETWORK_LOCAL_ADDRESS: &str = "network.local.address";
pub const NETWORK_LOCAL_PORT: &str = "network.local.port";
pub const URL_PATH: &str = "url.path";
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const PROCESS_PID: &str = "process.pid";
pub const THREAD_ID: &str = "thread.id";
pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
pub const CONTAINER_ID: &str = "container.id";
/// Which TLS library (or plaintext) the bytes were read from.
pub const OBSERVER_TLS_LIBRARY: &str = "observer.tls.library";

// Set by the link stage on the spans it infers.
pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
pub const TOOL_NAME: &str = "gen_ai.tool.name";
pub const TOOL_TYPE: &str = "gen_ai.tool.type";
/// Why a span is where it is in its trace (on spans and on span links).
pub const OBSERVER_LINK_REASON: &str = "observer.link.reason";
/// How many calls an agent run made, and why its root was written when it was.
pub const OBSERVER_RUN_CALLS: &str = "observer.run.calls";
pub const OBSERVER_RUN_CLOSE_REASON: &str = "observer.run.close_reason";

/// "reported" when the provider sent token usage, "estimated" when a stream carried none and
/// the counts come from a tokenizer.
pub const OBSERVER_USAGE_SOURCE: &str = "observer.usage.source";
/// Number of stream events (SSE data events, NDJSON lines, array elements, event-stream
/// messages), the `[DONE]` sentinel excluded.
pub const OBSERVER_STREAM_CHUNK_COUNT: &str = "observer.stream.chunk_count";
/// Stream events that carried output (text, reasoning or tool-call arguments).
pub const OBSERVER_STREAM_OUTPUT_CHUNK_COUNT: &str = "observer.stream.output_chunk_count";
/// Event-stream messages that failed a CRC or were malformed (present only when some did).
pub const OBSERVER_STREAM_CORRUPT_FRAMES: &str = "observer.stream.corrupt_frames";
pub const OBSERVER_ERROR_CODE: &str = "observer.error.code";
pub const OBSERVER_ERROR_MESSAGE: &str = "observer.error.message";
/// Why the exchange was handed on, when it is not "complete" (see `ExchangeEnd`).
pub const OBSERVER_EXCHANGE_END: &str = "observer.exchange.end";

/// Rate-limit response headers, one attribute each: `observer.ratelimit.{limit|remaining|reset}_{requests|tokens|input_tokens|output_tokens}`
/// (from OpenAI-style `x-ratelimit-*` and `anthropic-ratelimit-*`). Counts are integers, resets
/// are the header's text (a duration like "6m0s", or an RFC 3339 time).
pub const OBSERVER_RATELIMIT_PREFIX: &str = "observer.ratelimit.";
/// The `retry-after` header: seconds, or an HTTP date, as sent.
pub const OBSERVER_RATELIMIT_RETRY_AFTER: &str = "observer.ratelimit.retry_after";

/// A stable hash (16 hex digits) of what shapes a prompt: provider, model, request parameters,
/// system instructions, tool definitions, output type. Calls sharing it share a prompt version.
pub const OBSERVER_PROMPT_FINGERPRINT: &str = "observer.prompt.fingerprint";

/// Names other backends read (OpenInference), copies of the GenAI attributes.
pub const OPENINFERENCE_SPAN_KIND: &str = "openinference.span.kind";
pub const LLM_MODEL_NAME: &str = "llm.model_name";
pub const LLM_TOKEN_COUNT_PROMPT: &str = "llm.token_count.prompt";
pub const LLM_TOKEN_COUNT_COMPLETION: &str = "llm.token_count.completion";
pub const LLM_TOKEN_COUNT_TOTAL: &str = "llm.token_count.total";
/// Set only from a conversation id the request itself carried.
pub const SESSION_ID: &str = "session.id";

/// What the call cost in USD, from the price table (`observer/data/prices.toml`, or a user's).
pub const OBSERVER_COST_USD: &str = "observer.cost.usd";
/// Why a call has no cost: no price for its model, or no token usage.
pub const OBSERVER_COST_UNKNOWN: &str = "observer.cost.unknown";
/// How many strings in the span were cut at the size cap (present only when some were).
pub const OBSERVER_CONTENT_TRUNCATED_STRINGS: &str = "observer.content.truncated_strings";

// What agents did between their calls: commands (processes) and MCP requests.
pub const TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
pub const TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";
pub const PROCESS_PARENT_PID: &str = "process.parent_pid";
pub const PROCESS_COMMAND_ARGS: &str = "process.command_args";
pub const PROCESS_ARGS_COUNT: &str = "process.args_count";
pub const PROCESS_WORKING_DIRECTORY: &str = "process.working_directory";
pub const PROCESS_EXIT_CODE: &str = "process.exit.code";
/// The signal that killed a command (its `process.exit.code` is then 128 + the signal).
pub const OBSERVER_PROCESS_SIGNAL: &str = "observer.process.signal";
/// The command's arguments were longer than the kernel copies: the last ones are missing.
pub const OBSERVER_PROCESS_ARGS_TRUNCATED: &str = "observer.process.args_truncated";
/// The command was still running when its agent's run closed: its end is the run's close.
pub const OBSERVER_PROCESS_STILL_RUNNING: &str = "observer.process.still_running";
/// How far below the agent process the command ran (its children: 1).
pub const OBSERVER_PROCESS_DEPTH: &str = "observer.process.depth";
pub const MCP_METHOD_NAME: &str = "mcp.method.name";
pub const MCP_SESSION_ID: &str = "mcp.session.id";
pub const MCP_PROTOCOL_VERSION: &str = "mcp.protocol.version";
pub const MCP_RESOURCE_URI: &str = "mcp.resource.uri";
pub const JSONRPC_REQUEST_ID: &str = "jsonrpc.request.id";
pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
pub const NETWORK_TRANSPORT: &str = "network.transport";
pub const NETWORK_PROTOCOL_NAME: &str = "network.protocol.name";
