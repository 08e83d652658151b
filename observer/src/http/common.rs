//! What HTTP/1 and HTTP/2 share: per-connection context, and messages built from a head and a body.
use super::body::{BodyBuilder, BodyOutcome};
use super::types::{Body, ExchangeEnd, Headers, Request, Response};
use super::{HttpLimits, HttpStats};
use crate::capture::{ConnKey, TlsLibrary, Unfollowed};
use crate::redact;

/// Shared by every call into a connection: configuration, counters, and who the bytes belong to.
pub(super) struct Cx<'a> {
    pub limits: &'a HttpLimits,
    pub stats: &'a mut HttpStats,
    pub conn: ConnKey,
    pub library: TlsLibrary,
    /// Whether a request's response is worth reading (see [`super::ResponseFilter`]).
    pub follows_response: super::ResponseFilter,
    /// Where a connection reports bytes it no longer needs.
    pub unfollowed: &'a mut Vec<Unfollowed>,
    /// Where a connection reports a whole request whose response it follows: a call is under
    /// way, told before its response comes.
    pub calls_sent: &'a mut Vec<ConnKey>,
}

/// Header fields kept per message, in both protocols: past this an HTTP/1 head is malformed
/// (a header flood), and HTTP/2 fields are decoded (to keep HPACK in step) but not kept.
pub(super) const MAX_HEADERS: usize = 128;

/// Where and when bytes were read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Arrival {
    pub ts: u64,
    pub tid: u32,
}

/// Why open exchanges are handed over before their response ended.
#[derive(Clone, Copy, Debug)]
pub(super) struct CloseReason {
    pub end: ExchangeEnd,
    /// Put in `Body.problem` of cut-off bodies.
    pub problem: &'static str,
    /// The peer ended the stream, which ends bodies delimited by the connection's close.
    pub conn_closed: bool,
}

#[derive(Clone, Debug)]
pub(super) enum StartKind {
    Request { method: String, target: String },
    Response { status: u16 },
}

impl StartKind {
    pub fn method(&self) -> Option<&str> {
        match self {
            StartKind::Request { method, .. } => Some(method),
            StartKind::Response { .. } => None,
        }
    }

    /// Interim responses (100 Continue, 103 Early Hints) precede the real one; 101 is final.
    pub fn is_interim(&self) -> bool {
        matches!(self, StartKind::Response { status } if (100..200).contains(status) && *status != 101)
    }
}

/// How a message's reading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    Complete,
    /// The stream ended (connection closed, observer stopped) before the message did.
    Cut,
    /// Bytes were lost or could not be parsed.
    Lost,
}

/// A message read to its end, or given up on.
#[derive(Debug)]
pub(super) struct Message {
    pub start: StartKind,
    pub headers: Headers,
    pub body: Body,
    pub tid: u32,
    pub ts_start: u64,
    pub ts_end: u64,
    pub ending: Ending,
}

impl Message {
    pub fn into_request(self) -> Request {
        let (method, target) = match self.start {
            StartKind::Request { method, target } => (method, target),
            StartKind::Response { .. } => Default::default(),
        };
        Request {
            method,
            target,
            headers: self.headers,
            body: self.body,
            ts_start: self.ts_start,
            ts_end: self.ts_end,
        }
    }

    /// The request this message is, copied (for a rare look; `into_request` moves).
    pub fn request_view(&self) -> Request {
        let (method, target) = match &self.start {
            StartKind::Request { method, target } => (method.clone(), target.clone()),
            StartKind::Response { .. } => Default::default(),
        };
        Request {
            method,
            target,
            headers: self.headers.clone(),
            body: self.body.clone(),
            ts_start: self.ts_start,
            ts_end: self.ts_end,
        }
    }

    pub fn into_response(self) -> Response {
        let status = match self.start {
            StartKind::Response { status } => status,
            StartKind::Request { .. } => 0,
        };
        Response {
            status,
            headers: self.headers,
            body: self.body,
            ts_start: self.ts_start,
            ts_end: self.ts_end,
        }
    }
}

/// A message whose head has been read and whose body is arriving.
pub(super) struct InProgress {
    pub start: StartKind,
    pub headers: Headers,
    pub body: BodyBuilder,
    pub tid: u32,
    pub ts_start: u64,
    pub ts_end: u64,
}

impl InProgress {
    pub fn finish(self, ending: Ending, problem: Option<&str>, stats: &mut HttpStats) -> Message {
        let (body, outcome) = self.body.finish(problem, self.ts_end);
        count_body(stats, outcome);
        Message {
            start: self.start,
            headers: self.headers,
            body,
            tid: self.tid,
            ts_start: self.ts_start,
            ts_end: self.ts_end,
            ending,
        }
    }
}

pub(super) fn count_body(stats: &mut HttpStats, outcome: BodyOutcome) {
    stats.bodies_truncated += u64::from(outcome.truncated);
    stats.decode_failures += u64::from(outcome.decode_failed);
}

/// A header as it is recorded: owned, value redacted, and kept lossily if it is not UTF-8.
pub(super) fn redacted_header(name: &str, value: &[u8]) -> (String, String) {
    let value = String::from_utf8_lossy(value);
    (
        name.to_owned(),
        redact::header_value(name, &value).into_owned(),
    )
}
