//! HTTP/2 client connections (RFC 9113): frames per direction, HPACK per direction, and one
//! exchange per stream.
//!
//! Egress carries the client's preface and frames (requests), ingress the server's (responses).
//! A connection joined after its preface is recognised by its frame headers; its HPACK dynamic
//! tables are then partly unknown, so a header block that refers to an entry we never saw is
//! reported as such, never guessed.
use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use loona_hpack::Decoder;
use loona_hpack::decoder::DecoderError;

use super::body::BodyBuilder;
use super::common::{CloseReason, Cx, Ending, InProgress, Message, StartKind, redacted_header};
use super::types::{Body, Exchange, ExchangeEnd, Headers, Request};
use crate::capture::Direction;
use crate::reassemble::Segment;
use crate::redact;

/// The client connection preface (RFC 9113 §3.4).
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
/// Streams open at once per connection; past this the oldest is given up on.
const MAX_OPEN_STREAMS: usize = 256;
/// Ids of finished streams remembered, so their late frames (trailing resets, request data
/// after the response) do not open them again.
const MAX_CLOSED_STREAMS: usize = 256;
/// Largest HPACK dynamic table we keep per direction, whatever the peer allows.
const MAX_HPACK_TABLE: usize = 64 << 10;
/// Header fields kept per message; more are decoded (to keep HPACK in step) but not kept.
const MAX_HEADERS: usize = 128;
/// Largest frame believed while guessing where frames start: peers rarely raise the 16 KiB
/// default frame size past 1 MiB.
const MAX_GUESSED_FRAME_LEN: u32 = 1 << 20;
/// SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2).
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// Extension frames are ignored (RFC 9113 §4.1).
    Unknown,
}

impl Kind {
    fn of(code: u8) -> Self {
        match code {
            0x0 => Kind::Data,
            0x1 => Kind::Headers,
            0x2 => Kind::Priority,
            0x3 => Kind::RstStream,
            0x4 => Kind::Settings,
            0x5 => Kind::PushPromise,
            0x6 => Kind::Ping,
            0x7 => Kind::GoAway,
            0x8 => Kind::WindowUpdate,
            0x9 => Kind::Continuation,
            _ => Kind::Unknown,
        }
    }

    /// Flags a sender may set on this kind of frame.
    fn known_flags(self) -> u8 {
        use flags::*;
        match self {
            Kind::Data => END_STREAM | PADDED,
            Kind::Headers => END_STREAM | END_HEADERS | PADDED | PRIORITY,
            Kind::PushPromise => END_HEADERS | PADDED,
            Kind::Continuation => END_HEADERS,
            Kind::Settings | Kind::Ping => ACK,
            Kind::Priority | Kind::RstStream | Kind::GoAway | Kind::WindowUpdate => 0,
            Kind::Unknown => 0xff,
        }
    }

    /// Whether frames of this kind belong to a stream (non-zero id) or to the connection.
    fn on_stream(self) -> bool {
        matches!(
            self,
            Kind::Data
                | Kind::Headers
                | Kind::Priority
                | Kind::RstStream
                | Kind::PushPromise
                | Kind::Continuation
        )
    }

    fn carries_header_block(self) -> bool {
        matches!(self, Kind::Headers | Kind::PushPromise | Kind::Continuation)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHeader {
    len: u32,
    kind: Kind,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes;
        Self {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            kind: Kind::of(kind),
            flags,
            // The high bit is reserved.
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Violations of RFC 9113 that make the rest of the connection unreadable.
    fn check(&self) -> Result<(), Malformed> {
        let fixed_len = match self.kind {
            Kind::Priority => Some(5),
            Kind::RstStream | Kind::WindowUpdate => Some(4),
            Kind::Ping => Some(8),
            _ => None,
        };
        if fixed_len.is_some_and(|len| len != self.len) {
            return Err(Malformed("frame of the wrong length"));
        }
        if self.kind == Kind::Settings
            && (!self.len.is_multiple_of(6) || self.has(flags::ACK) && self.len > 0)
        {
            return Err(Malformed("SETTINGS of the wrong length"));
        }
        let stream_expected = self.kind.on_stream();
        if self.kind != Kind::Unknown
            && self.kind != Kind::WindowUpdate
            && stream_expected != (self.stream != 0)
        {
            return Err(Malformed("frame on the wrong stream"));
        }
        Ok(())
    }

    /// Whether this looks like a frame a peer would send, judged strictly: used to find frames
    /// when there is no preface to go by.
    fn is_plausible(&self) -> bool {
        self.kind != Kind::Unknown
            && self.flags & !self.kind.known_flags() == 0
            && self.len <= MAX_GUESSED_FRAME_LEN
            && self.check().is_ok()
    }
}

/// Whether `bytes` start with HTTP/2 frames (a connection joined after its preface), or `None`
/// if more bytes are needed to tell.
pub(super) fn sniff_frames(bytes: &[u8]) -> Option<bool> {
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + FRAME_HEADER_LEN) else {
            // One whole plausible frame header is enough; a first one not yet whole is not.
            return (at > 0).then_some(true);
        };
        let header = FrameHeader::parse(header.try_into().ok()?);
        if !header.is_plausible() {
            return Some(false);
        }
        at += FRAME_HEADER_LEN + header.len as usize;
        if at >= bytes.len() {
            return Some(true);
        }
    }
}

/// The connection breaks RFC 9113: nothing after this can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Malformed(&'static str);

/// Where and when bytes were read.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    ts: u64,
    tid: u32,
}

/// What one direction's frames say, in order.
#[derive(Debug)]
enum Event<'a> {
    /// A whole frame other than DATA, as sent (padding included).
    Frame {
        header: FrameHeader,
        payload: Bytes,
        started: Arrival,
    },
    /// The next piece of a DATA frame's payload, padding removed.
    Data { stream: u32, bytes: &'a [u8] },
    /// A DATA frame ended.
    DataEnd { stream: u32, end_stream: bool },
    /// A frame other than DATA too large to keep was skipped.
    Skipped { header: FrameHeader },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Matching the client preface; `matched` bytes of it seen. `optional`: a connection we
    /// believe joined mid-way may still turn out to start with it (reads seen out of order).
    Preface {
        matched: usize,
        optional: bool,
    },
    Header,
    /// Collecting the payload of a frame other than DATA.
    Payload(FrameHeader),
    /// Skipping the payload of a frame too large to keep.
    Skip {
        header: FrameHeader,
        left: u32,
    },
    /// A padded DATA frame's pad length byte is next.
    PadLength(FrameHeader),
    Data {
        stream: u32,
        end_stream: bool,
        data_left: u32,
        pad_left: u32,
    },
    /// Bytes were lost: waiting for a read that starts with a frame.
    Resync,
}

/// One direction of a connection: bytes in, frame events out. DATA payloads are passed on as
/// they arrive, so a streamed body keeps its arrival times and no DATA frame is buffered.
struct FrameReader {
    state: ReadState,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload: BytesMut,
    started: Arrival,
}

impl FrameReader {
    fn new(state: ReadState) -> Self {
        Self {
            state,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload: BytesMut::new(),
            started: Arrival { ts: 0, tid: 0 },
        }
    }

    /// Bytes before the next read were lost: frames are looked for again from a read's start.
    fn lose_sync(&mut self) {
        self.state = ReadState::Resync;
        self.header_len = 0;
        self.payload = BytesMut::new();
    }

    /// At the start of a read: whether it may be parsed (false drops it while resynchronising).
    fn accepts(&mut self, input: &[u8]) -> bool {
        if self.state != ReadState::Resync {
            return true;
        }
        if sniff_frames(input) == Some(true) {
            self.state = ReadState::Header;
        }
        self.state != ReadState::Resync
    }

    /// Consumes `input` up to the next event.
    fn next<'a>(
        &mut self,
        input: &mut &'a [u8],
        at: Arrival,
        max_payload: usize,
    ) -> Result<Option<Event<'a>>, Malformed> {
        loop {
            if let Some(end) = self.frame_end_if_empty() {
                return Ok(Some(end));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let event = match self.state {
                ReadState::Preface { matched, optional } => {
                    self.read_preface(input, matched, optional)?
                }
                ReadState::Header => self.read_header(input, at, max_payload)?,
                ReadState::Payload(header) => self.read_payload(input, header),
                ReadState::Skip { header, left } => self.skip(input, header, left),
                ReadState::PadLength(header) => self.read_pad_length(input, header)?,
                ReadState::Data {
                    stream,
                    end_stream,
                    data_left,
                    pad_left,
                } => self.read_data(input, stream, end_stream, data_left, pad_left),
                ReadState::Resync => {
                    *input = &[];
                    None
                }
            };
            if event.is_some() {
                return Ok(event);
            }
        }
    }

    fn read_preface(
        &mut self,
        input: &mut &[u8],
        matched: usize,
        optional: bool,
    ) -> Result<Option<Event<'static>>, Malformed> {
        let expected = &PREFACE[matched..];
        let n = expected.len().min(input.len());
        if input[..n] != expected[..n] {
            if optional && matched == 0 {
                self.state = ReadState::Header;
                return Ok(None);
            }
            return Err(Malformed("not the HTTP/2 preface"));
        }
        *input = &input[n..];
        self.state = if matched + n == PREFACE.len() {
            ReadState::Header
        } else {
            ReadState::Preface {
                matched: matched + n,
                optional,
            }
        };
        Ok(None)
    }

    fn read_header(
        &mut self,
        input: &mut &[u8],
        at: Arrival,
        max_payload: usize,
    ) -> Result<Option<Event<'static>>, Malformed> {
        if self.header_len == 0 {
            self.started = at;
        }
        let n = (FRAME_HEADER_LEN - self.header_len).min(input.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
        self.header_len += n;
        *input = &input[n..];
        if self.header_len < FRAME_HEADER_LEN {
            return Ok(None);
        }
        self.header_len = 0;
        let header = FrameHeader::parse(&self.header);
        header.check()?;
        self.state = match header.kind {
            Kind::Data if header.has(flags::PADDED) => ReadState::PadLength(header),
            Kind::Data => ReadState::Data {
                stream: header.stream,
                end_stream: header.has(flags::END_STREAM),
                data_left: header.len,
                pad_left: 0,
            },
            Kind::Unknown => ReadState::Skip {
                header,
                left: header.len,
            },
            _ if header.len as usize > max_payload => ReadState::Skip {
                header,
                left: header.len,
            },
            _ => ReadState::Payload(header),
        };
        Ok(None)
    }

    /// A frame (or what is left of it) without payload ends without more input.
    fn frame_end_if_empty(&mut self) -> Option<Event<'static>> {
        match self.state {
            ReadState::Payload(header) if header.len == 0 => {
                self.read_payload(&mut &[][..], header)
            }
            ReadState::Skip { header, left: 0 } => {
                self.state = ReadState::Header;
                Some(Event::Skipped { header })
            }
            ReadState::Data {
                stream,
                end_stream,
                data_left: 0,
                pad_left: 0,
            } => {
                self.state = ReadState::Header;
                Some(Event::DataEnd { stream, end_stream })
            }
            _ => None,
        }
    }

    fn read_payload(&mut self, input: &mut &[u8], header: FrameHeader) -> Option<Event<'static>> {
        let missing = header.len as usize - self.payload.len();
        let n = missing.min(input.len());
        self.payload.extend_from_slice(&input[..n]);
        *input = &input[n..];
        if n < missing {
            return None;
        }
        self.state = ReadState::Header;
        Some(Event::Frame {
            header,
            payload: self.payload.split().freeze(),
            started: self.started,
        })
    }

    fn skip(
        &mut self,
        input: &mut &[u8],
        header: FrameHeader,
        left: u32,
    ) -> Option<Event<'static>> {
        let n = (left as usize).min(input.len());
        *input = &input[n..];
        self.state = ReadState::Skip {
            header,
            left: left - n as u32,
        };
        None
    }

    fn read_pad_length(
        &mut self,
        input: &mut &[u8],
        header: FrameHeader,
    ) -> Result<Option<Event<'static>>, Malformed> {
        let pad = u32::from(input[0]);
        *input = &input[1..];
        let Some(data_left) = header.len.checked_sub(1 + pad) else {
            return Err(Malformed("padding longer than the frame"));
        };
        self.state = ReadState::Data {
            stream: header.stream,
            end_stream: header.has(flags::END_STREAM),
            data_left,
            pad_left: pad,
        };
        Ok(None)
    }

    fn read_data<'a>(
        &mut self,
        input: &mut &'a [u8],
        stream: u32,
        end_stream: bool,
        data_left: u32,
        pad_left: u32,
    ) -> Option<Event<'a>> {
        if data_left > 0 {
            let n = (data_left as usize).min(input.len());
            let (bytes, rest) = input.split_at(n);
            *input = rest;
            self.state = ReadState::Data {
                stream,
                end_stream,
                data_left: data_left - n as u32,
                pad_left,
            };
            return Some(Event::Data { stream, bytes });
        }
        let n = (pad_left as usize).min(input.len());
        *input = &input[n..];
        self.state = ReadState::Data {
            stream,
            end_stream,
            data_left: 0,
            pad_left: pad_left - n as u32,
        };
        None
    }
}

/// One direction's HPACK decoder, and whether its dynamic table can still be trusted.
struct Hpack {
    decoder: Decoder<'static>,
    /// The capture started after the preface: entries of the peer's table may be missing.
    joined_mid: bool,
    /// Why the table is no longer known: later header blocks are not decoded.
    unknown: Option<&'static str>,
}

impl Hpack {
    fn new(joined_mid: bool) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_HPACK_TABLE);
        Self {
            decoder,
            joined_mid,
            unknown: None,
        }
    }

    /// The peer allowed this direction's encoder a table of `size` bytes.
    fn allow_table_size(&mut self, size: u32) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        self.decoder
            .set_max_allowed_table_size(size.min(MAX_HPACK_TABLE));
    }

    /// Decodes one header block, keeping what the limits allow.
    fn decode(&mut self, block: &[u8], max_bytes: usize, cx: &mut Cx) -> DecodedHead {
        let mut head = DecodedHead::new(max_bytes);
        if let Some(why) = self.unknown {
            head.problem = Some(format!("hpack state unknown ({why})"));
            return head;
        }
        let result = self
            .decoder
            .decode_with_cb(block, |name, value| head.push(&name, &value));
        if let Err(err) = result {
            let why = match err {
                DecoderError::HeaderIndexOutOfBounds if self.joined_mid => "joined mid-connection",
                _ => {
                    cx.stats.parse_failures += 1;
                    log::debug!("{:?}: hpack: {err}", cx.conn);
                    "malformed header block"
                }
            };
            // Entries this block would have added are missing: later indices would be wrong.
            self.unknown = Some(why);
            head.problem = Some(format!("hpack state unknown ({why})"));
        }
        head
    }
}

/// A decoded header block: pseudo-header fields apart, the rest redacted in wire order.
#[derive(Default)]
struct DecodedHead {
    method: String,
    target: String,
    status: u16,
    headers: Headers,
    /// Decoded bytes still allowed in `headers`.
    budget: usize,
    problem: Option<String>,
}

impl DecodedHead {
    fn new(max_bytes: usize) -> Self {
        Self {
            budget: max_bytes,
            ..Self::default()
        }
    }

    /// A head that was never seen (its HEADERS frame came before we attached).
    fn not_seen() -> Self {
        Self {
            problem: Some("head not seen (joined mid-connection)".to_owned()),
            ..Self::default()
        }
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len();
        if size > self.budget || self.headers.0.len() >= MAX_HEADERS {
            self.problem
                .get_or_insert_with(|| "header list larger than the limit".to_owned());
            return;
        }
        self.budget -= size;
        let text = || String::from_utf8_lossy(value);
        match name {
            b":method" => self.method = text().into_owned(),
            b":path" => self.target = redact::target(&text()).into_owned(),
            b":status" => self.status = text().parse().unwrap_or_default(),
            // Downstream stages read the host from a Host header, as in HTTP/1.
            b":authority" => self.headers.0.push(redacted_header("host", value)),
            // Other pseudo-headers (:scheme, :protocol) have no HTTP/1 counterpart.
            _ if name.starts_with(b":") => {}
            _ => self
                .headers
                .0
                .push(redacted_header(&String::from_utf8_lossy(name), value)),
        }
    }

    fn is_interim_response(&self) -> bool {
        StartKind::Response {
            status: self.status,
        }
        .is_interim()
    }
}

/// A request or response of one stream.
enum Part {
    /// Neither its head nor its body has been seen.
    Awaiting,
    Open {
        msg: InProgress,
        /// Why its head is not (all) known, if it is not.
        head_problem: Option<String>,
    },
    Done {
        msg: Message,
        head_unknown: bool,
    },
}

impl Part {
    fn open(dir: Direction, mut head: DecodedHead, at: Arrival, cx: &Cx) -> Self {
        let start = match dir {
            Direction::Egress => StartKind::Request {
                method: std::mem::take(&mut head.method),
                target: std::mem::take(&mut head.target),
            },
            Direction::Ingress => StartKind::Response {
                status: head.status,
            },
        };
        Part::Open {
            msg: InProgress {
                body: BodyBuilder::new(&head.headers, cx.limits.max_body_bytes),
                start,
                headers: head.headers,
                tid: at.tid,
                ts_start: at.ts,
                ts_end: at.ts,
            },
            head_problem: head.problem,
        }
    }

    /// The message's latest bytes arrived at `ts`.
    fn touch(&mut self, ts: u64) {
        if let Part::Open { msg, .. } = self {
            msg.ts_end = ts;
        }
    }

    /// Ends the message: whole, or cut short for `problem`.
    fn finish(&mut self, problem: Option<&str>, cx: &mut Cx) {
        *self = match std::mem::replace(self, Part::Awaiting) {
            Part::Open { msg, head_problem } => {
                let ending = if problem.is_some() {
                    Ending::Cut
                } else {
                    Ending::Complete
                };
                Part::Done {
                    msg: msg.finish(ending, head_problem.as_deref().or(problem), cx.stats),
                    head_unknown: head_problem.is_some(),
                }
            }
            other => other,
        };
    }

    fn into_message(self) -> Option<(Message, bool)> {
        match self {
            Part::Done { msg, head_unknown } => Some((msg, head_unknown)),
            Part::Awaiting | Part::Open { .. } => None,
        }
    }
}

/// One stream: a request and its response.
struct Stream {
    request: Part,
    response: Part,
    /// Who and when we first saw of it, for a request never seen.
    first_seen: Arrival,
}

impl Stream {
    fn part(&mut self, dir: Direction) -> &mut Part {
        match dir {
            Direction::Egress => &mut self.request,
            Direction::Ingress => &mut self.response,
        }
    }
}

/// A header block being collected from HEADERS or PUSH_PROMISE and its CONTINUATIONs.
struct PendingBlock {
    stream: u32,
    /// Pushed requests are decoded only to keep HPACK in step.
    promise: bool,
    end_stream: bool,
    fragment: BytesMut,
    too_large: bool,
    started: Arrival,
}

/// Both directions' frames turned into exchanges, one per stream.
struct Streams {
    hpack: [Hpack; 2],
    pending: [Option<PendingBlock>; 2],
    open: BTreeMap<u32, Stream>,
    closed: VecDeque<u32>,
}

fn index(dir: Direction) -> usize {
    match dir {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl Streams {
    fn new(joined_mid: bool) -> Self {
        Self {
            hpack: [Hpack::new(joined_mid), Hpack::new(joined_mid)],
            pending: [None, None],
            open: BTreeMap::new(),
            closed: VecDeque::new(),
        }
    }

    fn on_event(
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
        if dir == Direction::Ingress
            && let Some(stream) = self.open.remove(&id)
        {
            let problem = "response ended before the request";
            self.emit(id, stream, ExchangeEnd::Complete, problem, cx, out);
        }
    }

    /// Hands over every open stream, cut short for `problem`.
    fn close_all(&mut self, end: ExchangeEnd, problem: &str, cx: &mut Cx, out: &mut Vec<Exchange>) {
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

/// A request whose frames all came before we attached.
fn unseen_request(ts: u64) -> Request {
    Request {
        method: String::new(),
        target: String::new(),
        headers: Headers::default(),
        body: Body {
            problem: Some("request not seen (joined mid-connection)".to_owned()),
            ..Body::default()
        },
        ts_start: ts,
        ts_end: ts,
    }
}

/// The header block fragment of a HEADERS, PUSH_PROMISE or CONTINUATION payload.
fn header_block_fragment(header: FrameHeader, mut payload: Bytes) -> Result<Bytes, Malformed> {
    let too_short = Malformed("header frame shorter than its fields");
    let padded = header.kind != Kind::Continuation && header.has(flags::PADDED);
    let pad = if padded {
        let pad = usize::from(*payload.first().ok_or(too_short)?);
        payload = payload.slice(1..);
        pad
    } else {
        0
    };
    let skip = match header.kind {
        Kind::Headers if header.has(flags::PRIORITY) => 5,
        // The promised stream id.
        Kind::PushPromise => 4,
        _ => 0,
    };
    let end = payload.len().checked_sub(pad).ok_or(too_short)?;
    if skip > end {
        return Err(too_short);
    }
    Ok(payload.slice(skip..end))
}

/// The SETTINGS_HEADER_TABLE_SIZE values in a SETTINGS payload, in order.
fn header_table_sizes(payload: &[u8]) -> impl Iterator<Item = u32> + '_ {
    payload.chunks_exact(6).filter_map(|entry| {
        let [i0, i1, v0, v1, v2, v3] = entry.try_into().ok()?;
        (u16::from_be_bytes([i0, i1]) == SETTINGS_HEADER_TABLE_SIZE)
            .then(|| u32::from_be_bytes([v0, v1, v2, v3]))
    })
}

/// RFC 9113 §7 error code names.
fn error_name(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("error {code:#x}"), |name| (*name).to_owned())
}

/// An HTTP/2 client connection.
pub(super) struct Http2Conn {
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

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whether an open stream carries a request that `follows` would report (a request still
    /// being written counts when it is a POST: every LLM call is one).
    pub fn call_in_flight(&self, follows: super::ResponseFilter) -> bool {
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

    pub fn on_segment(&mut self, seg: &Segment, cx: &mut Cx, out: &mut Vec<Exchange>) {
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
    pub fn close(&mut self, reason: CloseReason, cx: &mut Cx, out: &mut Vec<Exchange>) {
        self.streams.close_all(reason.end, reason.problem, cx, out);
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
