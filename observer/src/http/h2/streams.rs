//! A connection's streams: both directions' frame events turned into header blocks, message
//! parts and, once a stream ends, exchanges.
use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::frame::{Event, FrameHeader, Kind, Malformed, error_name, flags};
use super::frame::{header_block_fragment, header_table_sizes};
use super::hpack::{DecodedHead, Hpack};
use super::stream::{Part, Stream, unseen_request};
use crate::capture::Direction;
use crate::http::common::{Arrival, Cx};
use crate::http::types::{Exchange, ExchangeEnd};

/// Streams open at once per connection; past this the oldest is given up on.
const MAX_OPEN_STREAMS: usize = 256;
/// Ids of finished streams remembered, so their late frames (trailing resets, request data
/// after the response) do not open them again.
const MAX_CLOSED_STREAMS: usize = 256;

/// A header block being collected from HEADERS or PUSH_PROMISE and its CONTINUATIONs.
pub(super) struct PendingBlock {
    stream: u32,
    /// Pushed requests are decoded only to keep HPACK in step.
    promise: bool,
    end_stream: bool,
    fragment: BytesMut,
    too_large: bool,
    started: Arrival,
}

/// Both directions' frames turned into exchanges, one per stream.
pub(super) struct Streams {
    pub(super) hpack: [Hpack; 2],
    pub(super) pending: [Option<PendingBlock>; 2],
    pub(super) open: BTreeMap<u32, Stream>,
    closed: VecDeque<u32>,
}

pub(super) fn index(dir: Direction) -> usize {
    match dir {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl Streams {
    pub(super) fn new(joined_mid: bool) -> Self {
        Self {
            hpack: [Hpack::new(joined_mid), Hpack::new(joined_mid)],
            pending: [None, None],
            open: BTreeMap::new(),
            closed: VecDeque::new(),
        }
    }

    pub(super) fn on_event(
        &mut self,
        dir: Direction,
        event: Event,
        at: Arrival,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) -> Result<(), Malformed> {
        let is_continuation = matches!(
            &event,
            Event::Frame { header, .. } | Event::Skipped { header }
                if header.kind == Kind::Continuation
        );
        if self.pending[index(dir)].is_some() != is_continuation {
            return Err(Malformed("header block interrupted"));
        }
        match event {
            Event::Frame {
                header,
                payload,
                started,
            } => self.on_frame(dir, header, payload, started, at, cx, out)?,
            Event::Skipped { header } if header.kind.carries_header_block() => {
                let max = cx.limits.max_header_bytes;
                self.block_fragment(dir, header, Bytes::new(), at, max)?
                    .too_large = true;
                self.end_block_if_done(dir, header, at, cx, out);
            }
            Event::Skipped { .. } => {}
            Event::Data { stream, bytes } => self.on_data(dir, stream, bytes, at, cx, out),
            Event::DataEnd { stream, end_stream } => {
                if end_stream {
                    self.end_part(dir, stream, at, cx, out);
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_frame(
        &mut self,
        dir: Direction,
        header: FrameHeader,
        payload: Bytes,
        started: Arrival,
        at: Arrival,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) -> Result<(), Malformed> {
        match header.kind {
            Kind::Headers | Kind::PushPromise | Kind::Continuation => {
                let fragment = header_block_fragment(header, payload)?;
                let max = cx.limits.max_header_bytes;
                self.block_fragment(dir, header, fragment, started, max)?;
                self.end_block_if_done(dir, header, at, cx, out);
            }
            Kind::Settings if !header.has(flags::ACK) => {
                // A peer's SETTINGS bound the other direction's encoder.
                let other = 1 - index(dir);
                for size in header_table_sizes(&payload) {
                    self.hpack[other].allow_table_size(size);
                }
            }
            Kind::RstStream => {
                let code = payload
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_be_bytes);
                let by = match dir {
                    Direction::Egress => "client",
                    Direction::Ingress => "server",
                };
                let problem = format!("stream reset by the {by}: {}", error_name(code));
                if let Some(stream) = self.open.remove(&header.stream) {
                    let end = ExchangeEnd::ConnectionClosed;
                    self.emit(header.stream, stream, end, &problem, cx, out);
                }
            }
            // Flow control, liveness, priorities and shutdown do not change what was said.
            _ => {}
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        dir: Direction,
        id: u32,
        bytes: &[u8],
        at: Arrival,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        let Some(part) = self.part(dir, id, at, cx, out) else {
            return;
        };
        if matches!(part, Part::Awaiting) {
            // Its HEADERS came before we attached: keep the body all the same.
            *part = Part::open(dir, DecodedHead::not_seen(), at, cx);
        }
        if let Part::Open { msg, .. } = part {
            msg.body.push(bytes, at.ts);
            msg.ts_end = at.ts;
        }
    }

    /// Adds a fragment to the header block of `dir`, starting one for HEADERS and PUSH_PROMISE.
    fn block_fragment(
        &mut self,
        dir: Direction,
        header: FrameHeader,
        fragment: Bytes,
        started: Arrival,
        max_bytes: usize,
    ) -> Result<&mut PendingBlock, Malformed> {
        let pending = &mut self.pending[index(dir)];
        if pending
            .as_ref()
            .is_some_and(|block| block.stream != header.stream)
        {
            return Err(Malformed("CONTINUATION on another stream"));
        }
        let block = pending.get_or_insert_with(|| PendingBlock {
            stream: header.stream,
            promise: header.kind == Kind::PushPromise,
            end_stream: header.has(flags::END_STREAM),
            fragment: BytesMut::new(),
            too_large: false,
            started,
        });
        if block.fragment.len() + fragment.len() > max_bytes {
            block.too_large = true;
            block.fragment = BytesMut::new();
        }
        if !block.too_large {
            block.fragment.extend_from_slice(&fragment);
        }
        Ok(block)
    }

    fn end_block_if_done(
        &mut self,
        dir: Direction,
        header: FrameHeader,
        at: Arrival,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        if !header.has(flags::END_HEADERS) {
            return;
        }
        let Some(block) = self.pending[index(dir)].take() else {
            return;
        };
        let hpack = &mut self.hpack[index(dir)];
        let head = if block.too_large {
            // Its entries never reach the decoder: the table is no longer known.
            hpack.unknown = Some("a header block was too large");
            DecodedHead {
                problem: Some("header block larger than the limit".to_owned()),
                ..DecodedHead::default()
            }
        } else {
            hpack.decode(&block.fragment, cx.limits.max_header_bytes, cx)
        };
        if !block.promise {
            self.on_head(dir, &block, head, at, cx, out);
        }
    }

    /// A request or response head, or trailers.
    fn on_head(
        &mut self,
        dir: Direction,
        block: &PendingBlock,
        head: DecodedHead,
        at: Arrival,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        let Some(part) = self.part(dir, block.stream, block.started, cx, out) else {
            return;
        };
        match part {
            Part::Awaiting if dir == Direction::Ingress && head.is_interim_response() => return,
            Part::Awaiting => *part = Part::open(dir, head, block.started, cx),
            // Trailers are decoded to keep HPACK in step, not kept.
            Part::Open { .. } | Part::Done { .. } => {}
        }
        part.touch(at.ts);
        if block.end_stream {
            self.end_part(dir, block.stream, at, cx, out);
        }
    }

    /// The part of stream `id` that `dir` carries, opening the stream if it is new; `None` for
    /// streams we do not follow (pushed, finished).
    fn part(
        &mut self,
        dir: Direction,
        id: u32,
        at: Arrival,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) -> Option<&mut Part> {
        // Even ids are server pushes: no request of the process.
        if id.is_multiple_of(2) || self.closed.contains(&id) {
            return None;
        }
        if !self.open.contains_key(&id)
            && self.open.len() >= MAX_OPEN_STREAMS
            && let Some((oldest, stream)) = self.open.pop_first()
        {
            cx.stats.http2_streams_evicted += 1;
            let problem = "stream evicted: too many concurrent streams";
            self.emit(oldest, stream, ExchangeEnd::DataLost, problem, cx, out);
        }
        let stream = self.open.entry(id).or_insert(Stream {
            request: Part::Awaiting,
            response: Part::Awaiting,
            first_seen: at,
        });
        Some(stream.part(dir))
    }

    /// END_STREAM in `dir`: the request is whole, or the response is and the exchange ends.
    fn end_part(
        &mut self,
        dir: Direction,
        id: u32,
        at: Arrival,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        let Some(stream) = self.open.get_mut(&id) else {
            return;
        };
        let part = stream.part(dir);
        part.touch(at.ts);
        part.finish(None, cx);
        if dir == Direction::Egress && stream.request.is_followed_call(cx) {
            cx.calls_sent.push(cx.conn);
        }
        if dir == Direction::Ingress
            && let Some(stream) = self.open.remove(&id)
        {
            let problem = "response ended before the request";
            self.emit(id, stream, ExchangeEnd::Complete, problem, cx, out);
        }
    }

    /// Hands over every open stream, cut short for `problem`.
    pub(super) fn close_all(
        &mut self,
        end: ExchangeEnd,
        problem: &str,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        while let Some((id, stream)) = self.open.pop_first() {
            self.emit(id, stream, end, problem, cx, out);
        }
    }

    /// Hands over one stream's exchange, ended for `end`; `problem` says why parts still open
    /// were cut short.
    fn emit(
        &mut self,
        id: u32,
        mut stream: Stream,
        end: ExchangeEnd,
        problem: &str,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        if self.closed.len() >= MAX_CLOSED_STREAMS {
            self.closed.pop_front();
        }
        self.closed.push_back(id);
        stream.request.finish(Some(problem), cx);
        stream.response.finish(Some(problem), cx);
        let response = stream.response.into_message();
        let (tid, request, request_head_unknown) = match stream.request.into_message() {
            Some((msg, head_unknown)) => (msg.tid, msg.into_request(), head_unknown),
            // Nothing of it to report.
            None if response.is_none() => return,
            None => {
                let seen = stream.first_seen;
                (seen.tid, unseen_request(seen.ts), true)
            }
        };
        let response_head_unknown = response.as_ref().is_some_and(|(_, unknown)| *unknown);
        cx.stats.exchanges += 1;
        cx.stats.http2_streams += 1;
        cx.stats.http2_hpack_unknown += u64::from(request_head_unknown || response_head_unknown);
        out.push(Exchange {
            conn: cx.conn,
            tid,
            library: cx.library,
            request,
            response: response.map(|(msg, _)| msg.into_response()),
            end,
        });
    }
}
