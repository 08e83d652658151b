//! What the HTTP stage hands to the LLM stage: complete (or cut-off) request/response pairs.
use bytes::Bytes;

use crate::capture::{ConnKey, TlsLibrary};

/// Header list in wire order, values already redacted (see `crate::redact`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// First value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// When a piece of a decoded body arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyPart {
    /// Unix nanoseconds of the read that completed this part.
    pub ts: u64,
    /// Offset in the decoded body where this part ends (exclusive).
    pub end: usize,
}

/// A message body after transfer decoding (chunked) and content decoding (gzip, br, zstd, deflate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    pub data: Bytes,
    /// Arrival times of the decoded body, in order; `parts.last().end == data.len()`.
    pub parts: Vec<BodyPart>,
    /// The body was larger than the configured cap; `data` holds its start.
    pub truncated: bool,
    /// Why the body is not whole, if it is not: e.g. "connection closed", "bytes lost", "decode: ...".
    pub problem: Option<String>,
}

impl Body {
    /// Time at which decoded offset `at` had arrived.
    pub fn time_at(&self, at: usize) -> Option<u64> {
        // Parts are in body order: a stream asks once per event, so search, not scan.
        let part = self.parts.partition_point(|p| p.end <= at);
        self.parts.get(part).map(|p| p.ts)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Request target (path and query) with secrets in the query redacted.
    pub target: String,
    pub headers: Headers,
    pub body: Body,
    /// First and last byte of the request, Unix nanoseconds.
    pub ts_start: u64,
    pub ts_end: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Body,
    pub ts_start: u64,
    pub ts_end: u64,
}

/// Why an exchange was handed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeEnd {
    /// The response was read to its end.
    Complete,
    /// The connection ended before the response did.
    ConnectionClosed,
    /// The observer stopped before the response ended.
    ObserverStopped,
    /// Bytes of the connection were lost (ring-buffer drop, cap), so the rest could not be parsed.
    DataLost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub conn: ConnKey,
    /// The thread that wrote the request.
    pub tid: u32,
    pub library: TlsLibrary,
    pub request: Request,
    /// None when no response head arrived.
    pub response: Option<Response>,
    pub end: ExchangeEnd,
}
