//! Reading a streamed (SSE) response: the bookkeeping every provider shares.
use serde_json::{Value, json};

use super::framing::sse;
use super::{LlmCall, attr};
use crate::http::{Body, Exchange};

/// What one stream event meant to the provider that read it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    /// It carried output (text, reasoning or tool-call arguments): the first such event
    /// marks time to first chunk.
    content: bool,
    /// It was the provider's end-of-stream event.
    terminal: bool,
}

impl Seen {
    pub const NOTHING: Seen = Seen::output(false);
    pub const TERMINAL: Seen = Seen {
        content: false,
        terminal: true,
    };

    pub const fn output(carried: bool) -> Seen {
        Seen {
            content: carried,
            terminal: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StreamSummary {
    chunk_count: u64,
    first_content_ts: Option<u64>,
    terminated: bool,
}

/// OpenAI-style end-of-stream sentinel; not JSON, so handled here once.
const DONE: &str = "[DONE]";

/// Feeds each SSE event whose data is JSON to `on_event` (with the event type if given).
pub(crate) fn read_sse(
    body: &Body,
    mut on_event: impl FnMut(Option<&str>, &Value) -> Seen,
) -> StreamSummary {
    let mut summary = StreamSummary::default();
    for event in sse::events(&body.data) {
        if event.data.trim() == DONE {
            summary.terminated = true;
            continue;
        }
        summary.chunk_count += 1;
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let seen = on_event(event.event.as_deref(), &data);
        if seen.content && summary.first_content_ts.is_none() {
            summary.first_content_ts = body.time_at(event.completed_at);
        }
        summary.terminated |= seen.terminal;
    }
    summary
}

impl StreamSummary {
    /// Records stream timing, and marks a stream that ended before its terminal event.
    /// A stream that reached it is whole even if the HTTP body was not read to its end
    /// (SDKs stop reading at `[DONE]` and close the connection).
    /// Runs after the provider recorded what the stream said.
    pub fn record(&self, call: &mut LlmCall, exchange: &Exchange) {
        call.set(attr::OBSERVER_STREAM_CHUNK_COUNT, self.chunk_count);
        let since_request = self
            .first_content_ts
            .and_then(|ts| ts.checked_sub(exchange.request.ts_end));
        if let Some(nanos) = since_request {
            call.set(attr::RESPONSE_TIME_TO_FIRST_CHUNK, nanos as f64 / 1e9);
        }
        if !self.terminated {
            call.set_default(attr::ERROR_TYPE, "stream_interrupted");
            call.set_default(attr::RESPONSE_FINISH_REASONS, json!(["error"]));
        }
    }
}
