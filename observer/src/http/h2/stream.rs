//! One HTTP/2 stream: its request and its response, each awaited, open or done.
use super::hpack::DecodedHead;
use crate::capture::Direction;
use crate::http::body::BodyBuilder;
use crate::http::common::{Arrival, Cx, Ending, InProgress, Message, StartKind};
use crate::http::types::{Body, Headers, Request};

/// A request or response of one stream.
pub(super) enum Part {
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
    pub(super) fn open(dir: Direction, mut head: DecodedHead, at: Arrival, cx: &Cx) -> Self {
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
    pub(super) fn touch(&mut self, ts: u64) {
        if let Part::Open { msg, .. } = self {
            msg.ts_end = ts;
        }
    }

    /// Ends the message: whole, or cut short for `problem`.
    pub(super) fn finish(&mut self, problem: Option<&str>, cx: &mut Cx) {
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

    /// A whole POST request whose response the filter follows.
    pub(super) fn is_followed_call(&self, cx: &Cx) -> bool {
        matches!(self, Part::Done { msg, .. }
            if msg.start.method() == Some("POST") && (cx.follows_response)(&msg.request_view()))
    }

    pub(super) fn into_message(self) -> Option<(Message, bool)> {
        match self {
            Part::Done { msg, head_unknown } => Some((msg, head_unknown)),
            Part::Awaiting | Part::Open { .. } => None,
        }
    }
}

/// One stream: a request and its response.
pub(super) struct Stream {
    pub(super) request: Part,
    pub(super) response: Part,
    /// Who and when we first saw of it, for a request never seen.
    pub(super) first_seen: Arrival,
}

impl Stream {
    pub(super) fn part(&mut self, dir: Direction) -> &mut Part {
        match dir {
            Direction::Egress => &mut self.request,
            Direction::Ingress => &mut self.response,
        }
    }
}

/// A request whose frames all came before we attached.
pub(super) fn unseen_request(ts: u64) -> Request {
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
