//! One direction of an HTTP/1 connection: heads, bodies (by length, chunked, until close), and
//! the search for the next message start after lost bytes or a parse failure.
use bytes::BytesMut;

use super::head::{ChunkStep, Framing, Head, HeadError, RequestFacts, Role, StartLine};
use super::head::{framing, parse_head, sniff_start_line};
use crate::http::HttpLimits;
use crate::http::body::BodyBuilder;
use crate::http::common::{Arrival, Cx, Ending, InProgress, Message};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
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
pub(super) struct Reader {
    role: Role,
    pub(super) state: State,
    /// An incomplete head.
    head: BytesMut,
    head_arrival: Arrival,
    line: LineReader,
    msg: Option<InProgress>,
}

impl Reader {
    pub(super) fn new(role: Role) -> Self {
        Self {
            role,
            state: State::Head { tentative: false },
            head: BytesMut::new(),
            head_arrival: Arrival { ts: 0, tid: 0 },
            line: LineReader::default(),
            msg: None,
        }
    }

    pub(super) fn in_progress_method(&self) -> Option<&str> {
        self.msg.as_ref()?.start.method()
    }

    pub(super) fn has_message_in_progress(&self) -> bool {
        self.msg.is_some()
    }

    /// Consumes `input` until a message ends (returned) or the input runs out (`None`).
    pub(super) fn advance(
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
    pub(super) fn on_gap(&mut self, cx: &mut Cx) -> Option<Message> {
        self.head.clear();
        self.line.clear();
        self.state = State::Resync { try_first: true };
        let msg = self.msg.take()?;
        Some(msg.finish(Ending::Lost, Some("bytes lost"), cx.stats))
    }

    /// The stream ended: hands over the message being read, if any.
    pub(super) fn close(
        &mut self,
        problem: &str,
        conn_closed: bool,
        cx: &mut Cx,
    ) -> Option<Message> {
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
