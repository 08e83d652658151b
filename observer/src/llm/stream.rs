//! Reading a streamed response, in any of the shared framings: the bookkeeping every provider
//! shares.
use serde_json::{Value, json};

use super::framing::{TextFrame, eventstream, json_array, ndjson, sse};
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

    /// Both at once: providers whose last chunk also carries output (Gemini, Ollama).
    pub const fn output_then_end(carried: bool, terminal: bool) -> Seen {
        Seen {
            content: carried,
            terminal,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StreamSummary {
    chunk_count: u64,
    /// Chunks that carried output, and when the first and the last of them arrived.
    content_chunks: u64,
    first_content_ts: Option<u64>,
    last_content_ts: Option<u64>,
    terminated: bool,
    /// Binary frames that failed their checks (event stream only).
    corrupt_frames: u64,
}

/// OpenAI-style end-of-stream sentinel; not JSON, so handled here once.
const DONE: &str = "[DONE]";

/// Feeds each SSE event whose data is JSON to `on_event` (with the event type if given).
pub(crate) fn read_sse(
    body: &Body,
    mut on_event: impl FnMut(Option<&str>, &Value) -> Seen,
) -> StreamSummary {
    read_sse_text(body, |event, data| {
        match serde_json::from_str::<Value>(data) {
            Ok(data) => on_event(event, &data),
            Err(_) => Seen::NOTHING,
        }
    })
}

/// Feeds each SSE event's data (but the end sentinel) to `on_event` unparsed, with the event
/// type if given: for providers that read their events into their own types.
pub(crate) fn read_sse_text(
    body: &Body,
    mut on_event: impl FnMut(Option<&str>, &str) -> Seen,
) -> StreamSummary {
    let mut summary = StreamSummary::default();
    for event in sse::events(&body.data) {
        if event.data.trim() == DONE {
            summary.terminated = true;
            continue;
        }
        let seen = on_event(event.event.as_deref(), &event.data);
        summary.count(body, event.completed_at, seen);
    }
    summary
}

/// Feeds each line of an NDJSON body that is JSON to `on_value`.
pub(crate) fn read_ndjson(body: &Body, on_value: impl FnMut(&Value) -> Seen) -> StreamSummary {
    read_json_frames(body, ndjson::lines(&body.data), on_value)
}

/// Feeds each element of a streamed JSON array to `on_value`.
pub(crate) fn read_json_array(body: &Body, on_value: impl FnMut(&Value) -> Seen) -> StreamSummary {
    read_json_frames(body, json_array::elements(&body.data), on_value)
}

fn read_json_frames<'a>(
    body: &Body,
    frames: impl Iterator<Item = TextFrame<'a>>,
    mut on_value: impl FnMut(&Value) -> Seen,
) -> StreamSummary {
    let mut summary = StreamSummary::default();
    for frame in frames {
        let seen = match serde_json::from_slice::<Value>(frame.data) {
            Ok(value) => on_value(&value),
            Err(_) => Seen::NOTHING,
        };
        summary.count(body, frame.completed_at, seen);
    }
    summary
}

/// Feeds each intact message of an AWS event-stream body to `on_message`; corrupt ones are
/// counted, not read.
pub(crate) fn read_eventstream(
    body: &Body,
    mut on_message: impl FnMut(&eventstream::Message) -> Seen,
) -> StreamSummary {
    let mut summary = StreamSummary::default();
    let mut messages = eventstream::messages(&body.data);
    for message in messages.by_ref() {
        let seen = on_message(&message);
        summary.count(body, message.completed_at, seen);
    }
    summary.corrupt_frames = messages.corrupt_messages();
    summary
}

impl StreamSummary {
    /// Seconds between output chunks after the first, on average (as the GenAI metric
    /// `gen_ai.client.operation.time_per_output_chunk` measures it); needs two such chunks.
    fn time_per_output_chunk(&self) -> Option<f64> {
        let span = self.last_content_ts?.checked_sub(self.first_content_ts?)?;
        let gaps = self.content_chunks.checked_sub(1).filter(|&n| n > 0)?;
        Some(span as f64 / gaps as f64 / 1e9)
    }

    fn count(&mut self, body: &Body, completed_at: usize, seen: Seen) {
        self.chunk_count += 1;
        if seen.content {
            self.content_chunks += 1;
            let at = body.time_at(completed_at);
            self.first_content_ts = self.first_content_ts.or(at);
            self.last_content_ts = at.or(self.last_content_ts);
        }
        self.terminated |= seen.terminal;
    }

    /// Records stream timing, and marks a stream that ended before its terminal event.
    /// A stream that reached it is whole even if the HTTP body was not read to its end
    /// (SDKs stop reading at `[DONE]` and close the connection).
    /// Runs after the provider recorded what the stream said.
    pub fn record(&self, call: &mut LlmCall, exchange: &Exchange) {
        call.set(attr::OBSERVER_STREAM_CHUNK_COUNT, self.chunk_count);
        if self.corrupt_frames > 0 {
            call.set(attr::OBSERVER_STREAM_CORRUPT_FRAMES, self.corrupt_frames);
        }
        let since_request = self
            .first_content_ts
            .and_then(|ts| ts.checked_sub(exchange.request.ts_end));
        if let Some(nanos) = since_request {
            call.set(attr::RESPONSE_TIME_TO_FIRST_CHUNK, nanos as f64 / 1e9);
        }
        call.set(
            attr::OBSERVER_STREAM_OUTPUT_CHUNK_COUNT,
            self.content_chunks,
        );
        if let Some(per_chunk) = self.time_per_output_chunk() {
            call.set(attr::RESPONSE_TIME_PER_OUTPUT_CHUNK, per_chunk);
        }
        if !self.terminated {
            call.set_default(attr::ERROR_TYPE, "stream_interrupted");
            call.set_default(attr::RESPONSE_FINISH_REASONS, json!(["error"]));
        }
    }
}
