//! HTTP/1.x: message framing per direction, and request/response pairing per connection.
use std::collections::VecDeque;

use bytes::BytesMut;

use super::HttpLimits;
use super::body::BodyBuilder;
use super::common::{CloseReason, Cx, Ending, InProgress, Message, StartKind, redacted_header};
use super::types::{Exchange, ExchangeEnd, Headers, Request};
use crate::capture::Unfollowed;
use crate::reassemble::Segment;
use crate::redact;

/// Headers parsed per message; more is treated as a malformed head (header flood).
const MAX_HEADERS: usize = 128;
/// Requests read ahead of their responses (pipelining); past this the oldest is given up on.
const MAX_WAITING_REQUESTS: usize = 64;
/// Responses read ahead of their (still streaming) request.
const MAX_EARLY_RESPONSES: usize = 4;

/// Which start line a direction carries: for a client, egress has requests, ingress responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Request,
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StartLine {
    Valid,
    /// A prefix of a start line: more bytes decide.
    NeedMore,
    Invalid,
}

/// Whether `bytes` begin with an HTTP/1.x request or status line.
pub(super) fn sniff_start_line(role: Role, bytes: &[u8]) -> StartLine {
    // A method is a short token: without a space early on, this is no request line (and
    // waiting for a whole head's worth of bytes to say so would follow a binary protocol for long).
    if role == Role::Request
        && bytes.len() >= LONGEST_METHOD + 1
        && !bytes[..=LONGEST_METHOD].contains(&b' ')
    {
        return StartLine::Invalid;
    }
    // No header slots: httparse reports `TooManyHeaders` only after accepting the start line.
    let result = match role {
        Role::Request => httparse::Request::new(&mut [])
            .parse(bytes)
            .map(|s| s.is_complete()),
        Role::Response => httparse::Response::new(&mut [])
            .parse(bytes)
            .map(|s| s.is_complete()),
    };
    match result {
        Ok(true) | Err(httparse::Error::TooManyHeaders) => StartLine::Valid,
        Ok(false) => StartLine::NeedMore,
        Err(_) => StartLine::Invalid,
    }
}

/// Longer than any registered HTTP method (`UPDATEREDIRECTREF`, 17).
const LONGEST_METHOD: usize = 24;

/// Where and when bytes were read.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    ts: u64,
    tid: u32,
}

/// What a response's framing depends on from its request.
#[derive(Clone, Copy, Debug, Default)]
struct RequestFacts {
    head: bool,
    connect: bool,
}

impl RequestFacts {
    fn of(method: &str) -> Self {
        Self {
            head: method.eq_ignore_ascii_case("HEAD"),
            connect: method.eq_ignore_ascii_case("CONNECT"),
        }
    }
}

/// A 101 response, or a 2xx answer to CONNECT: later bytes are another protocol.
fn switches_protocols(request: &Request, response: &Message) -> bool {
    match response.start {
        StartKind::Response { status: 101 } => true,
        StartKind::Response { status } => {
            (200..300).contains(&status) && RequestFacts::of(&request.method).connect
        }
        StartKind::Request { .. } => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(ChunkStep),
    /// The body ends when the connection does (responses only).
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkStep {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a head. `tentative`: found while resynchronising, so a bad head is not a failure.
    Head {
        tentative: bool,
    },
    Body(Framing),
    /// After lost bytes or a parse failure: skipping to the next start line. `try_first`: the
    /// input's first byte may start one (false when that very line just failed to parse).
    Resync {
        try_first: bool,
    },
}

/// One direction of an HTTP/1 connection: bytes in, messages out.
struct Reader {
    role: Role,
    state: State,
    /// An incomplete head.
    head: BytesMut,
    head_arrival: Arrival,
    line: LineReader,
    msg: Option<InProgress>,
}

/// A parsed head, before it owns a body.
struct Head {
    start: StartKind,
    headers: Headers,
}

impl Reader {
    fn new(role: Role) -> Self {
        Self {
            role,
            state: State::Head { tentative: false },
            head: BytesMut::new(),
            head_arrival: Arrival { ts: 0, tid: 0 },
            line: LineReader::default(),
            msg: None,
        }
    }

    fn in_progress_method(&self) -> Option<&str> {
        self.msg.as_ref()?.start.method()
    }

    fn has_message_in_progress(&self) -> bool {
        self.msg.is_some()
    }

    /// Consumes `input` until a message ends (returned) or the input runs out (`None`).
    fn advance(
        &mut self,
        input: &mut &[u8],
        at: Arrival,
        request: RequestFacts,
        cx: &mut Cx,
    ) -> Option<Message> {
        while !input.is_empty() {
            let done = match self.state {
                State::Resync { try_first } => {
                    let before = input.len();
                    self.resync(input, try_first);
                    cx.stats.resync_skipped_bytes += (before - input.len()) as u64;
                    None
                }
                State::Head { tentative } => self.read_head(input, tentative, at, request, cx),
                State::Body(framing) => self.read_body(input, framing, at, cx),
            };
            if done.is_some() {
                return done;
            }
        }
        None
    }

    /// Bytes before the next input were lost: gives up the message being read.
    fn on_gap(&mut self, cx: &mut Cx) -> Option<Message> {
        self.head.clear();
        self.line.clear();
        self.state = State::Resync { try_first: true };
        let msg = self.msg.take()?;
        Some(msg.finish(Ending::Lost, Some("bytes lost"), cx.stats))
    }

    /// The stream ended: hands over the message being read, if any.
    fn close(&mut self, problem: &str, conn_closed: bool, cx: &mut Cx) -> Option<Message> {
        let ends_at_close = conn_closed && self.state == State::Body(Framing::UntilClose);
        self.state = State::Head { tentative: false };
        self.head.clear();
        self.line.clear();
        let msg = self.msg.take()?;
        Some(if ends_at_close {
            msg.finish(Ending::Complete, None, cx.stats)
        } else {
            msg.finish(Ending::Cut, Some(problem), cx.stats)
        })
    }

    fn read_head(
        &mut self,
        input: &mut &[u8],
        tentative: bool,
        at: Arrival,
        request: RequestFacts,
        cx: &mut Cx,
    ) -> Option<Message> {
        let parsed = if self.head.is_empty() {
            self.head_arrival = at;
            // Fast path: the whole head is usually in one read; parse it without copying.
            match parse_head(self.role, input) {
                Ok(Some((len, _))) if len > cx.limits.max_header_bytes => Err(HeadError::TooLarge),
                Ok(Some((len, head))) => {
                    *input = &input[len..];
                    Ok(Some(head))
                }
                Ok(None) => self.buffer_head(input, cx.limits).map(|()| None),
                Err(err) => Err(err),
            }
        } else {
            self.extend_head(input, cx.limits)
        };
        match parsed {
            Ok(Some(head)) => self.start_message(head, at, request, cx),
            Ok(None) => None,
            Err(err) => {
                self.head.clear();
                if !tentative {
                    cx.stats.parse_failures += 1;
                    log::debug!("{:?}: malformed {:?} head: {err}", cx.conn, self.role);
                }
                // Skip the line that failed, so the same bytes are not parsed again.
                self.state = State::Resync { try_first: false };
                None
            }
        }
    }

    /// Keeps the start of a head that did not fit in one read.
    fn buffer_head(&mut self, input: &mut &[u8], limits: &HttpLimits) -> Result<(), HeadError> {
        if input.len() > limits.max_header_bytes {
            return Err(HeadError::TooLarge);
        }
        self.head.extend_from_slice(input);
        *input = &[];
        Ok(())
    }

    /// Appends to a buffered head and parses it once it may be whole.
    fn extend_head(
        &mut self,
        input: &mut &[u8],
        limits: &HttpLimits,
    ) -> Result<Option<Head>, HeadError> {
        let old_len = self.head.len();
        let take = input
            .len()
            .min(limits.max_header_bytes.saturating_sub(old_len) + 1);
        self.head.extend_from_slice(&input[..take]);
        // Only a blank line can end a head: do not reparse until one may have arrived.
        let search_from = old_len.saturating_sub(3);
        if !contains_blank_line(&self.head[search_from..]) {
            if self.head.len() > limits.max_header_bytes {
                return Err(HeadError::TooLarge);
            }
            *input = &input[take..];
            return Ok(None);
        }
        match parse_head(self.role, &self.head)? {
            Some((len, head)) => {
                *input = &input[len - old_len..];
                self.head.clear();
                Ok(Some(head))
            }
            None if self.head.len() > limits.max_header_bytes => Err(HeadError::TooLarge),
            None => {
                *input = &input[take..];
                Ok(None)
            }
        }
    }

    fn start_message(
        &mut self,
        head: Head,
        at: Arrival,
        request: RequestFacts,
        cx: &mut Cx,
    ) -> Option<Message> {
        if head.start.is_interim() {
            self.state = State::Head { tentative: false };
            return None;
        }
        let framing = framing(&head, request);
        let msg = InProgress {
            body: BodyBuilder::new(&head.headers, cx.limits.max_body_bytes),
            start: head.start,
            headers: head.headers,
            tid: self.head_arrival.tid,
            ts_start: self.head_arrival.ts,
            ts_end: at.ts,
        };
        match framing {
            Ok(Framing::Length(0)) => {
                self.state = State::Head { tentative: false };
                Some(msg.finish(Ending::Complete, None, cx.stats))
            }
            Ok(framing) => {
                self.state = State::Body(framing);
                self.msg = Some(msg);
                None
            }
            Err(problem) => {
                cx.stats.parse_failures += 1;
                self.state = State::Resync { try_first: true };
                Some(msg.finish(Ending::Lost, Some(problem), cx.stats))
            }
        }
    }

    fn read_body(
        &mut self,
        input: &mut &[u8],
        framing: Framing,
        at: Arrival,
        cx: &mut Cx,
    ) -> Option<Message> {
        let Some(msg) = self.msg.as_mut() else {
            // Unreachable by construction; resynchronising keeps the input moving regardless.
            self.state = State::Resync { try_first: true };
            return None;
        };
        msg.ts_end = at.ts;
        match framing {
            Framing::Length(remaining) => {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                msg.body.push(&input[..n], at.ts);
                *input = &input[n..];
                let remaining = remaining - n as u64;
                self.state = State::Body(Framing::Length(remaining));
                if remaining == 0 {
                    self.complete(cx)
                } else {
                    None
                }
            }
            Framing::UntilClose => {
                msg.body.push(input, at.ts);
                *input = &[];
                None
            }
            Framing::Chunked(step) => self.read_chunked(input, step, at, cx),
        }
    }

    fn read_chunked(
        &mut self,
        input: &mut &[u8],
        mut step: ChunkStep,
        at: Arrival,
        cx: &mut Cx,
    ) -> Option<Message> {
        let max_line = cx.limits.max_header_bytes;
        while !input.is_empty() {
            step = match step {
                ChunkStep::Data(remaining) => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    if let Some(msg) = self.msg.as_mut() {
                        msg.body.push(&input[..n], at.ts);
                    }
                    *input = &input[n..];
                    match remaining - n as u64 {
                        0 => ChunkStep::DataEnd,
                        left => ChunkStep::Data(left),
                    }
                }
                ChunkStep::Size => match self.line.next(input, max_line, chunk_size) {
                    LineRead::Partial => ChunkStep::Size,
                    LineRead::Line(Some(0)) => ChunkStep::Trailers,
                    LineRead::Line(Some(size)) => ChunkStep::Data(size),
                    LineRead::Line(None) | LineRead::TooLong => {
                        return self.fail("invalid chunk size", cx);
                    }
                },
                ChunkStep::DataEnd => match self.line.next(input, max_line, is_blank) {
                    LineRead::Partial => ChunkStep::DataEnd,
                    LineRead::Line(true) => ChunkStep::Size,
                    LineRead::Line(false) | LineRead::TooLong => {
                        return self.fail("chunk longer than its size", cx);
                    }
                },
                // Trailer fields are read past, not kept.
                ChunkStep::Trailers => match self.line.next(input, max_line, is_blank) {
                    LineRead::Partial | LineRead::Line(false) => ChunkStep::Trailers,
                    LineRead::Line(true) => return self.complete(cx),
                    LineRead::TooLong => return self.fail("trailer too long", cx),
                },
            };
        }
        self.state = State::Body(Framing::Chunked(step));
        None
    }

    fn complete(&mut self, cx: &mut Cx) -> Option<Message> {
        self.state = State::Head { tentative: false };
        Some(self.msg.take()?.finish(Ending::Complete, None, cx.stats))
    }

    /// The body cannot be framed any further: hand over what we have and look for the next message.
    fn fail(&mut self, problem: &str, cx: &mut Cx) -> Option<Message> {
        cx.stats.parse_failures += 1;
        self.line.clear();
        self.state = State::Resync { try_first: true };
        Some(
            self.msg
                .take()?
                .finish(Ending::Lost, Some(problem), cx.stats),
        )
    }

    /// Skips to the next line that starts a message of this direction. A read's first byte is a
    /// candidate too: a new write often starts a new message (and a lost one ended the last).
    fn resync(&mut self, input: &mut &[u8], try_first: bool) {
        let mut candidate = if try_first {
            Some(0)
        } else {
            next_line_start(input, 0)
        };
        while let Some(at) = candidate {
            match sniff_start_line(self.role, &input[at..]) {
                StartLine::Valid => {
                    *input = &input[at..];
                    self.state = State::Head { tentative: false };
                    return;
                }
                StartLine::NeedMore => {
                    *input = &input[at..];
                    self.state = State::Head { tentative: true };
                    return;
                }
                StartLine::Invalid => candidate = next_line_start(input, at),
            }
        }
        self.state = State::Resync { try_first: true };
        *input = &[];
    }
}

/// Where the line after the one containing `from` starts, if within `input`.
fn next_line_start(input: &[u8], from: usize) -> Option<usize> {
    let newline = input.get(from..)?.iter().position(|&b| b == b'\n')?;
    let start = from + newline + 1;
    (start < input.len()).then_some(start)
}

fn contains_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"\r\n" | b"\n")
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((_, size))) => Some(size),
        _ => None,
    }
}

#[derive(Debug)]
enum HeadError {
    Parse(httparse::Error),
    TooLarge,
}

impl From<httparse::Error> for HeadError {
    fn from(err: httparse::Error) -> Self {
        HeadError::Parse(err)
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Parse(err) => write!(f, "{err}"),
            HeadError::TooLarge => f.write_str("head larger than the limit"),
        }
    }
}

/// Parses a complete head at the start of `bytes`: its length and content, or `None` if partial.
fn parse_head(role: Role, bytes: &[u8]) -> Result<Option<(usize, Head)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match role {
        Role::Request => {
            let mut req = httparse::Request::new(&mut slots);
            let httparse::Status::Complete(len) = req.parse(bytes)? else {
                return Ok(None);
            };
            let start = StartKind::Request {
                method: req.method.unwrap_or_default().to_owned(),
                target: redact::target(req.path.unwrap_or_default()).into_owned(),
            };
            Ok(Some((
                len,
                Head {
                    start,
                    headers: headers(req.headers),
                },
            )))
        }
        Role::Response => {
            let mut res = httparse::Response::new(&mut slots);
            let httparse::Status::Complete(len) = res.parse(bytes)? else {
                return Ok(None);
            };
            let start = StartKind::Response {
                status: res.code.unwrap_or_default(),
            };
            Ok(Some((
                len,
                Head {
                    start,
                    headers: headers(res.headers),
                },
            )))
        }
    }
}

/// Owned, redacted headers; values that are not UTF-8 are kept lossily.
fn headers(raw: &[httparse::Header]) -> Headers {
    Headers(
        raw.iter()
            .map(|h| redacted_header(h.name, h.value))
            .collect(),
    )
}

/// How the body of a message is delimited (RFC 9112 §6.3).
fn framing(head: &Head, request: RequestFacts) -> Result<Framing, &'static str> {
    if let StartKind::Response { status } = head.start {
        let tunnel = request.connect && (200..300).contains(&status);
        if request.head || tunnel || matches!(status, 100..=199 | 204 | 304) {
            return Ok(Framing::Length(0));
        }
    }
    let is_request = matches!(head.start, StartKind::Request { .. });
    if let Some(codings) = head.headers.get("transfer-encoding") {
        let chunked_last = codings
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return match (chunked_last, is_request) {
            (true, _) => Ok(Framing::Chunked(ChunkStep::Size)),
            (false, true) => Err("transfer-encoding without chunked"),
            (false, false) => Ok(Framing::UntilClose),
        };
    }
    match content_length(&head.headers)? {
        Some(len) => Ok(Framing::Length(len)),
        None if is_request => Ok(Framing::Length(0)),
        None => Ok(Framing::UntilClose),
    }
}

/// The Content-Length, if any; repeated values must agree.
fn content_length(headers: &Headers) -> Result<Option<u64>, &'static str> {
    let mut found = None;
    let values = headers
        .0
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    for value in values.flat_map(|(_, v)| v.split(',')) {
        let len: u64 = value.trim().parse().map_err(|_| "invalid content-length")?;
        if found.is_some_and(|prev| prev != len) {
            return Err("conflicting content-length");
        }
        found = Some(len);
    }
    Ok(found)
}

enum LineRead<T> {
    Partial,
    Line(T),
    TooLong,
}

/// Collects a short line (chunk size, trailer) that may be split across reads.
#[derive(Default)]
struct LineReader {
    buf: BytesMut,
}

impl LineReader {
    fn clear(&mut self) {
        self.buf.clear();
    }

    /// Takes one line (with its newline) from `input` and hands it to `parse`.
    fn next<T>(
        &mut self,
        input: &mut &[u8],
        max: usize,
        parse: impl FnOnce(&[u8]) -> T,
    ) -> LineRead<T> {
        let Some(newline) = input.iter().position(|&b| b == b'\n') else {
            if self.buf.len() + input.len() > max {
                self.buf.clear();
                return LineRead::TooLong;
            }
            self.buf.extend_from_slice(input);
            *input = &[];
            return LineRead::Partial;
        };
        let (line, rest) = input.split_at(newline + 1);
        *input = rest;
        if self.buf.len() + line.len() > max {
            self.buf.clear();
            return LineRead::TooLong;
        }
        if self.buf.is_empty() {
            return LineRead::Line(parse(line));
        }
        self.buf.extend_from_slice(line);
        let parsed = parse(&self.buf);
        self.buf.clear();
        LineRead::Line(parsed)
    }
}

/// A request read in full, waiting for its response.
struct SentRequest {
    request: Request,
    tid: u32,
    ending: Ending,
}

impl SentRequest {
    fn new(msg: Message) -> Self {
        let (tid, ending) = (msg.tid, msg.ending);
        Self {
            request: msg.into_request(),
            tid,
            ending,
        }
    }

    /// Its response may turn the connection into another protocol.
    fn may_switch_protocols(&self) -> bool {
        RequestFacts::of(&self.request.method).connect
            || self.request.headers.get("upgrade").is_some()
    }
}

/// An HTTP/1 client connection: requests on egress, responses on ingress, paired in order.
pub(super) struct Http1Conn {
    requests: Reader,
    responses: Reader,
    /// Requests read in full, oldest first, waiting for their responses.
    waiting: VecDeque<SentRequest>,
    /// Responses that ended before their request did (a server may answer early).
    early: VecDeque<Message>,
    /// The connection switched protocols (101, CONNECT): its later bytes are not HTTP/1.
    upgraded: bool,
    /// The response being read is not followed (its request is not one we report): responses
    /// are dropped until the next request starts.
    response_unfollowed: bool,
    /// Joined mid-stream and no message start found yet: the bytes skipped so far.
    searching: Option<u64>,
}

/// How far a connection joined mid-stream is searched for a message start before it is judged
/// not to be HTTP: more than what is left of a long streamed answer, little for the rare
/// connection that predates its process's probes.
const JOINED_SEARCH_BYTES: u64 = 1 << 20;

impl Http1Conn {
    pub fn new() -> Self {
        Self {
            requests: Reader::new(Role::Request),
            responses: Reader::new(Role::Response),
            waiting: VecDeque::new(),
            early: VecDeque::new(),
            upgraded: false,
            response_unfollowed: false,
            searching: None,
        }
    }

    /// A connection whose first bytes seen are from the middle of a message (its process was
    /// followed after the connection started): both directions skip to their next message start.
    pub fn joined() -> Self {
        let mut conn = Self::new();
        conn.requests.state = State::Resync { try_first: true };
        conn.responses.state = State::Resync { try_first: true };
        conn.searching = Some(0);
        conn
    }

    pub fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// Switched protocols, or joined mid-stream and no message start found within the budget:
    /// its later bytes are not followed.
    pub fn stopped(&self) -> bool {
        self.upgraded || self.searching.is_some_and(|skipped| skipped > JOINED_SEARCH_BYTES)
    }

    /// Whether a request that `follows` would report is open: being written, or waiting for
    /// (or reading) its response.
    pub fn call_in_flight(&self, follows: super::ResponseFilter) -> bool {
        self.waiting.iter().any(|sent| follows(&sent.request))
            || self
                .requests
                .msg
                .as_ref()
                .is_some_and(|msg| msg.start.method() == Some("POST"))
    }

    pub fn on_segment(&mut self, seg: &Segment, cx: &mut Cx, out: &mut Vec<Exchange>) {
        let role = match seg.dir {
            crate::capture::Direction::Egress => Role::Request,
            crate::capture::Direction::Ingress => Role::Response,
        };
        if self.response_unfollowed {
            // The capture may stop copying the response at any point, so its bytes are dropped
            // whole; the next request's first byte starts a fresh response.
            if role == Role::Response {
                return;
            }
            self.response_unfollowed = false;
            self.responses = Reader::new(Role::Response);
        }
        if seg.gap_before > 0
            && let Some(msg) = self.reader(role).on_gap(cx)
        {
            self.accept(role, msg, ExchangeEnd::DataLost, cx, out);
        }
        let at = Arrival {
            ts: seg.ts,
            tid: seg.tid,
        };
        let mut input = &seg.data[..];
        let skipped_before = cx.stats.resync_skipped_bytes;
        while !input.is_empty() && !self.upgraded {
            let request = self.next_response_request();
            let Some(msg) = self.reader(role).advance(&mut input, at, request, cx) else {
                break;
            };
            match role {
                Role::Request => {
                    let sent = SentRequest::new(msg);
                    // Only a request that ends its segment: a pipelined one behind it would need
                    // the response the capture stops copying.
                    if input.is_empty() && self.response_unwanted(&sent, cx) {
                        self.unfollow_response(cx, seg.end_offset);
                    } else {
                        self.accept_request(sent, ExchangeEnd::DataLost, cx, out);
                    }
                }
                Role::Response => self.accept_response(msg, ExchangeEnd::DataLost, cx, out),
            }
        }
        if let Some(skipped) = self.searching {
            let found = [&self.requests, &self.responses]
                .iter()
                .any(|reader| {
                    matches!(
                        reader.state,
                        State::Head { tentative: false } | State::Body(_)
                    )
                });
            self.searching = (!found)
                .then_some(skipped + (cx.stats.resync_skipped_bytes - skipped_before));
        }
    }

    /// Hands over every open exchange; the connection is done.
    pub fn close(&mut self, reason: CloseReason, cx: &mut Cx, out: &mut Vec<Exchange>) {
        if let Some(request) = self.requests.close(reason.problem, reason.conn_closed, cx) {
            self.accept_request(SentRequest::new(request), reason.end, cx, out);
        }
        if !self.response_unfollowed
            && let Some(response) = self.responses.close(reason.problem, reason.conn_closed, cx)
        {
            self.accept_response(response, reason.end, cx, out);
        }
        while let Some(request) = self.waiting.pop_front() {
            self.emit(request, None, reason.end, cx, out);
        }
        self.early.clear();
    }

    fn reader(&mut self, role: Role) -> &mut Reader {
        match role {
            Role::Request => &mut self.requests,
            Role::Response => &mut self.responses,
        }
    }

    /// A whole request that is the only one outstanding, and that the next stage would not
    /// report: its response need not be read.
    fn response_unwanted(&self, sent: &SentRequest, cx: &Cx) -> bool {
        sent.ending == Ending::Complete
            && self.waiting.is_empty()
            && self.early.is_empty()
            && !sent.may_switch_protocols()
            && !(cx.follows_response)(&sent.request)
    }

    /// Drops the response to the request that ended at egress offset `request_end`, and asks
    /// the capture stage not to copy it.
    fn unfollow_response(&mut self, cx: &mut Cx, request_end: u64) {
        cx.stats.responses_not_followed += 1;
        self.response_unfollowed = true;
        self.responses = Reader::new(Role::Response);
        cx.unfollowed.push(Unfollowed::Response {
            conn: cx.conn,
            request_end,
        });
    }

    /// What the response now being read needs to know about its request.
    fn next_response_request(&self) -> RequestFacts {
        if !self.early.is_empty() {
            // Its request has not even started.
            return RequestFacts::default();
        }
        self.waiting
            .front()
            .map(|sent| sent.request.method.as_str())
            .or_else(|| self.requests.in_progress_method())
            .map(RequestFacts::of)
            .unwrap_or_default()
    }

    /// Pairs a finished request with a response that came early, or queues it. `cut_short` is
    /// the end reported for an exchange whose response did not complete (and was not lost):
    /// the reason we stopped.
    fn accept_request(
        &mut self,
        sent: SentRequest,
        cut_short: ExchangeEnd,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        match self.early.pop_front() {
            Some(response) => self.emit(sent, Some(response), cut_short, cx, out),
            None => {
                self.waiting.push_back(sent);
                if self.waiting.len() > MAX_WAITING_REQUESTS
                    && let Some(oldest) = self.waiting.pop_front()
                {
                    // Its response will never be matched: treat it as lost.
                    self.emit(oldest, None, ExchangeEnd::DataLost, cx, out);
                }
            }
        }
    }

    /// Pairs a finished response with the oldest waiting request (see [`Self::accept_request`]).
    fn accept_response(
        &mut self,
        msg: Message,
        cut_short: ExchangeEnd,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        match self.waiting.pop_front() {
            Some(request) => self.emit(request, Some(msg), cut_short, cx, out),
            None if self.requests.has_message_in_progress()
                && self.early.len() < MAX_EARLY_RESPONSES =>
            {
                self.early.push_back(msg)
            }
            None => cx.stats.unmatched_responses += 1,
        }
    }

    /// A message given up on after lost bytes.
    fn accept(
        &mut self,
        role: Role,
        msg: Message,
        cut_short: ExchangeEnd,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        match role {
            Role::Request => self.accept_request(SentRequest::new(msg), cut_short, cx, out),
            Role::Response => self.accept_response(msg, cut_short, cx, out),
        }
    }

    fn emit(
        &mut self,
        sent: SentRequest,
        response: Option<Message>,
        cut_short: ExchangeEnd,
        cx: &mut Cx,
        out: &mut Vec<Exchange>,
    ) {
        let response_ending = response.as_ref().map(|r| r.ending);
        let end = if sent.ending == Ending::Lost || response_ending == Some(Ending::Lost) {
            ExchangeEnd::DataLost
        } else if response_ending == Some(Ending::Complete) {
            ExchangeEnd::Complete
        } else {
            cut_short
        };
        if response
            .as_ref()
            .is_some_and(|r| switches_protocols(&sent.request, r))
        {
            self.upgraded = true;
            cx.stats.upgraded += 1;
        }
        cx.stats.exchanges += 1;
        out.push(Exchange {
            conn: cx.conn,
            tid: sent.tid,
            library: cx.library,
            request: sent.request,
            response: response.map(Message::into_response),
            end,
        });
    }
}
