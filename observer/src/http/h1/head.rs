//! HTTP/1 start lines and heads: recognising them, parsing them, and the body framing they
//! imply.
use crate::http::common::{MAX_HEADERS, StartKind, redacted_header};
use crate::http::types::Headers;
use crate::redact;

/// Which start line a direction carries: for a client, egress has requests, ingress responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::http) enum Role {
    Request,
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::http) enum StartLine {
    Valid,
    /// A prefix of a start line: more bytes decide.
    NeedMore,
    Invalid,
}

/// Whether `bytes` begin with an HTTP/1.x request or status line.
pub(in crate::http) fn sniff_start_line(role: Role, bytes: &[u8]) -> StartLine {
    // A method is a short token: without a space early on, this is no request line (and
    // waiting for a whole head's worth of bytes to say so would follow a binary protocol for long).
    if role == Role::Request
        && bytes.len() > LONGEST_METHOD
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

/// What a response's framing depends on from its request.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RequestFacts {
    head: bool,
    pub(super) connect: bool,
}

impl RequestFacts {
    pub(super) fn of(method: &str) -> Self {
        Self {
            head: method.eq_ignore_ascii_case("HEAD"),
            connect: method.eq_ignore_ascii_case("CONNECT"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked(ChunkStep),
    /// The body ends when the connection does (responses only).
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkStep {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// A parsed head, before it owns a body.
pub(super) struct Head {
    pub(super) start: StartKind,
    pub(super) headers: Headers,
}

#[derive(Debug)]
pub(super) enum HeadError {
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
pub(super) fn parse_head(role: Role, bytes: &[u8]) -> Result<Option<(usize, Head)>, HeadError> {
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
pub(super) fn framing(head: &Head, request: RequestFacts) -> Result<Framing, &'static str> {
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
