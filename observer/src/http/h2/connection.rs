//! An HTTP/2 client connection: a frame reader per direction feeding the connection's streams.
use super::frame::{FrameReader, Malformed, ReadState};
use super::stream::Part;
use super::streams::{Streams, index};
use crate::capture::Direction;
use crate::http::common::{Arrival, CloseReason, Cx};
use crate::http::types::{Exchange, ExchangeEnd};
use crate::http::{IgnoredBecause, ProtocolConn, ResponseFilter};
use crate::reassemble::Segment;

/// An HTTP/2 client connection.
pub(in crate::http) struct Http2Conn {
    readers: [FrameReader; 2],
    streams: Streams,
    /// The connection broke the protocol: nothing more is read.
    stopped: bool,
}

impl Http2Conn {
    /// `joined_mid`: the capture started after the preface, so HPACK state is partly unknown.
    pub fn new(joined_mid: bool) -> Self {
        Self {
            readers: [
                FrameReader::new(ReadState::Preface {
                    matched: 0,
                    optional: joined_mid,
                }),
                FrameReader::new(ReadState::Header),
            ],
            streams: Streams::new(joined_mid),
            stopped: false,
        }
    }

    /// Bytes of `dir` were lost: frames and HPACK state are lost with them.
    fn on_gap(&mut self, dir: Direction, cx: &mut Cx, out: &mut Vec<Exchange>) {
        let side = index(dir);
        self.readers[side].lose_sync();
        self.streams.pending[side] = None;
        self.streams.hpack[side].unknown = Some("bytes lost");
        self.streams
            .close_all(ExchangeEnd::DataLost, "bytes lost", cx, out);
    }
}

impl ProtocolConn for Http2Conn {
    fn on_segment(&mut self, seg: &Segment, cx: &mut Cx, out: &mut Vec<Exchange>) {
        if self.stopped {
            return;
        }
        let side = index(seg.dir);
        if seg.gap_before > 0 {
            self.on_gap(seg.dir, cx, out);
        }
        let reader = &mut self.readers[side];
        let mut input = &seg.data[..];
        if !reader.accepts(input) {
            cx.stats.resync_skipped_bytes += input.len() as u64;
            return;
        }
        let at = Arrival {
            ts: seg.ts,
            tid: seg.tid,
        };
        let max_payload = cx.limits.max_header_bytes;
        loop {
            let result = match reader.next(&mut input, at, max_payload) {
                Ok(Some(event)) => self.streams.on_event(seg.dir, event, at, cx, out),
                Ok(None) => break,
                Err(err) => Err(err),
            };
            if let Err(Malformed(why)) = result {
                cx.stats.parse_failures += 1;
                log::debug!("{:?}: malformed HTTP/2 {:?}: {why}", cx.conn, seg.dir);
                let problem = format!("malformed HTTP/2: {why}");
                self.streams
                    .close_all(ExchangeEnd::DataLost, &problem, cx, out);
                self.stopped = true;
                return;
            }
        }
    }

    /// Hands over every open exchange; the connection is done.
    fn close(&mut self, reason: CloseReason, cx: &mut Cx, out: &mut Vec<Exchange>) {
        self.streams.close_all(reason.end, reason.problem, cx, out);
    }

    /// The connection broke the protocol: nothing more is read.
    fn stopped(&self) -> Option<IgnoredBecause> {
        self.stopped.then_some(IgnoredBecause::Stopped)
    }

    /// Whether an open stream carries a request that `follows` would report (a request still
    /// being written counts when it is a POST: every LLM call is one).
    fn call_in_flight(&self, follows: ResponseFilter) -> bool {
        self.streams
            .open
            .values()
            .any(|stream| match &stream.request {
                Part::Awaiting => false,
                Part::Open { msg, .. } => msg.start.method() == Some("POST"),
                Part::Done { msg, .. } => {
                    msg.start.method() == Some("POST") && follows(&msg.request_view())
                }
            })
    }
}
