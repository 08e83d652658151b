//! An HTTP/1 client connection: requests read in full wait for their responses, and are paired
//! with them in order.
use std::collections::VecDeque;

use super::head::{RequestFacts, Role};
use super::reader::{Reader, State};
use crate::capture::{Direction, Unfollowed};
use crate::http::common::{Arrival, CloseReason, Cx, Ending, Message, StartKind};
use crate::http::types::{Exchange, ExchangeEnd, Request};
use crate::http::{IgnoredBecause, ProtocolConn, ResponseFilter};
use crate::reassemble::Segment;

/// Requests read ahead of their responses (pipelining); past this the oldest is given up on.
const MAX_WAITING_REQUESTS: usize = 64;
/// Responses read ahead of their (still streaming) request.
const MAX_EARLY_RESPONSES: usize = 4;

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
pub(in crate::http) struct Http1Conn {
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
        if sent.ending == Ending::Complete && (cx.follows_response)(&sent.request) {
            cx.calls_sent.push(cx.conn);
        }
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

impl ProtocolConn for Http1Conn {
    fn on_segment(&mut self, seg: &Segment, cx: &mut Cx, out: &mut Vec<Exchange>) {
        let role = match seg.dir {
            Direction::Egress => Role::Request,
            Direction::Ingress => Role::Response,
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
            let found = [&self.requests, &self.responses].iter().any(|reader| {
                matches!(
                    reader.state,
                    State::Head { tentative: false } | State::Body(_)
                )
            });
            self.searching =
                (!found).then_some(skipped + (cx.stats.resync_skipped_bytes - skipped_before));
        }
    }

    /// Hands over every open exchange; the connection is done.
    fn close(&mut self, reason: CloseReason, cx: &mut Cx, out: &mut Vec<Exchange>) {
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

    /// Switched protocols, or joined mid-stream and no message start found within the budget
    /// (then judged not to be HTTP): its later bytes are not followed.
    fn stopped(&self) -> Option<IgnoredBecause> {
        if self.upgraded {
            Some(IgnoredBecause::Stopped)
        } else if self
            .searching
            .is_some_and(|skipped| skipped > JOINED_SEARCH_BYTES)
        {
            Some(IgnoredBecause::NotHttp)
        } else {
            None
        }
    }

    /// Whether a request that `follows` would report is open: being written, or waiting for
    /// (or reading) its response.
    fn call_in_flight(&self, follows: ResponseFilter) -> bool {
        self.waiting.iter().any(|sent| follows(&sent.request))
            || self.requests.in_progress_method() == Some("POST")
    }
}
