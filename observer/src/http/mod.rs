//! The HTTP stage: ordered byte streams in, request/response exchanges out.
//!
//! Each connection's protocol is decided from its first bytes: an HTTP/1.x request, or the HTTP/2
//! preface or frames, written by the process make it a client connection we parse; anything else
//! is counted and skipped (server side, not HTTP at all).
mod body;
mod common;
mod h1;
mod h2;
pub mod types;

use std::borrow::Cow;
use std::collections::HashMap;

pub use types::*;

use crate::capture::{ConnHash, ConnKey, Direction, TlsLibrary, Unfollowed};
use crate::reassemble::{Reassembler, ReassemblyLimits, ReassemblyStats, Segment, StreamInput};
use common::{CloseReason, Cx};
use h1::{Http1Conn, Role, StartLine, sniff_start_line};
use h2::{Http2Conn, PREFACE as HTTP2_PREFACE, sniff_frames};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Decoded body bytes kept per message; the rest is dropped and the body marked truncated.
    pub max_body_bytes: usize,
    /// Bytes of one message head (start line and headers), and of one chunk-size or trailer line.
    pub max_header_bytes: usize,
    /// Connections tracked at once; past this the least recently active are dropped.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_header_bytes: 64 << 10,
            max_connections: 16_384,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub exchanges: u64,
    /// Malformed heads, chunk framing or lengths.
    pub parse_failures: u64,
    /// Connections on which the process is the HTTP server: we emit client spans only.
    pub server_side_skipped: u64,
    /// HTTP/2 client connections followed, and the streams among their exchanges.
    pub http2_connections: u64,
    pub http2_streams: u64,
    /// HTTP/2 exchanges with a head we could not read: sent before we attached, or encoded
    /// against HPACK state we do not have. Their method, target or status may be empty.
    pub http2_hpack_unknown: u64,
    /// Streams given up on because too many were open on one connection.
    pub http2_streams_evicted: u64,
    /// Connections that do not speak HTTP.
    pub non_http_skipped: u64,
    /// Segments that followed lost bytes.
    pub gaps: u64,
    pub bodies_truncated: u64,
    pub decode_failures: u64,
    pub connections_evicted: u64,
    /// Responses with no request to pair with (e.g. the request was written before we attached).
    pub unmatched_responses: u64,
    /// Connections whose first bytes seen were from the middle of an exchange (they started
    /// before their process was followed): what came before is not seen.
    pub joined_mid_stream: u64,
    /// Bytes skipped to find the next message start (after joining mid-stream, lost bytes or
    /// a parse failure).
    pub resync_skipped_bytes: u64,
    /// Reads that arrived for connections already judged not to speak HTTP.
    pub reads_after_not_http: u64,
    /// Connections that switched protocols (101, CONNECT) and are no longer followed.
    pub upgraded: u64,
    /// HTTP/1 responses not read because their request was not an LLM call.
    pub responses_not_followed: u64,
}

impl HttpStats {
    /// Every counter with its metric label, for the health metrics.
    pub fn counters(&self) -> [(&'static str, u64); 18] {
        [
            ("exchanges", self.exchanges),
            ("parse_failures", self.parse_failures),
            ("server_side_skipped", self.server_side_skipped),
            ("http2_connections", self.http2_connections),
            ("http2_streams", self.http2_streams),
            ("http2_hpack_unknown", self.http2_hpack_unknown),
            ("http2_streams_evicted", self.http2_streams_evicted),
            ("non_http_skipped", self.non_http_skipped),
            ("gaps", self.gaps),
            ("bodies_truncated", self.bodies_truncated),
            ("decode_failures", self.decode_failures),
            ("connections_evicted", self.connections_evicted),
            ("unmatched_responses", self.unmatched_responses),
            ("joined_mid_stream", self.joined_mid_stream),
            ("resync_skipped_bytes", self.resync_skipped_bytes),
            ("reads_after_not_http", self.reads_after_not_http),
            ("upgraded", self.upgraded),
            ("responses_not_followed", self.responses_not_followed),
        ]
    }
}

/// Whether the response to a request is worth reading: the LLM stage's "is this an LLM call".
pub type ResponseFilter = fn(&Request) -> bool;

fn follow_every_response(_: &Request) -> bool {
    true
}

/// What a connection carries, decided at its first bytes.
enum Protocol {
    /// Not yet decided: the first bytes are kept to be replayed once it is.
    Sniffing(Vec<Segment>),
    /// HTTP/1 or HTTP/2.
    Following(Box<dyn ProtocolConn>),
    /// Not followed: later bytes are dropped.
    Ignored(IgnoredBecause),
}

impl Protocol {
    /// No longer followed, counted by why.
    fn ignored(because: IgnoredBecause, stats: &mut HttpStats) -> Self {
        match because {
            IgnoredBecause::ServerSide => stats.server_side_skipped += 1,
            IgnoredBecause::NotHttp => stats.non_http_skipped += 1,
            // Counted by what stopped it: `upgraded`, `parse_failures`.
            IgnoredBecause::Stopped => {}
        }
        Protocol::Ignored(because)
    }
}

/// A client connection followed in one protocol: what the tracker asks of HTTP/1 and HTTP/2.
trait ProtocolConn: Send {
    /// Reads the connection's next bytes, handing over the exchanges they end.
    fn on_segment(&mut self, seg: &Segment, cx: &mut Cx, out: &mut Vec<Exchange>);

    /// Hands over every open exchange; the connection is done.
    fn close(&mut self, reason: CloseReason, cx: &mut Cx, out: &mut Vec<Exchange>);

    /// Why its later bytes are not followed, once they are not.
    fn stopped(&self) -> Option<IgnoredBecause>;

    /// Whether a request that `follows` would report is open.
    fn call_in_flight(&self, follows: ResponseFilter) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IgnoredBecause {
    ServerSide,
    NotHttp,
    /// Switched protocols (101, CONNECT), or an HTTP/2 connection that could not be followed.
    Stopped,
}

struct Connection {
    library: TlsLibrary,
    last_ts: u64,
    protocol: Protocol,
}

/// What the first bytes say about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Http1Client,
    Http2Client,
    /// HTTP/2 frames without the preface: the capture started after it.
    Http2Joined,
    /// Neither a start line nor frames, from a response or text: the middle of an HTTP/1
    /// message (the capture started after the connection did).
    Http1Joined,
    ServerSide,
    NotHttp,
}

/// Decides from the first bytes seen in `dir`, or `None` if more bytes are needed.
fn classify(dir: Direction, first_bytes: &[u8], max_head: usize) -> Option<Verdict> {
    let preface_len = first_bytes.len().min(HTTP2_PREFACE.len());
    if first_bytes[..preface_len] == HTTP2_PREFACE[..preface_len] {
        return match (preface_len == HTTP2_PREFACE.len(), dir) {
            (false, _) => None,
            (true, Direction::Egress) => Some(Verdict::Http2Client),
            (true, Direction::Ingress) => Some(Verdict::ServerSide),
        };
    }
    let verdict = match dir {
        Direction::Egress => match sniff_start_line(Role::Request, first_bytes) {
            StartLine::Valid => Some(Verdict::Http1Client),
            StartLine::NeedMore => None,
            StartLine::Invalid => Some(Verdict::NotHttp),
        },
        // A response first means we attached after the request was written: still a client.
        Direction::Ingress => match (
            sniff_start_line(Role::Request, first_bytes),
            sniff_start_line(Role::Response, first_bytes),
        ) {
            (StartLine::Valid, _) => Some(Verdict::ServerSide),
            (_, StartLine::Valid) => Some(Verdict::Http1Client),
            (StartLine::Invalid, StartLine::Invalid) => Some(Verdict::NotHttp),
            _ => None,
        },
    };
    match verdict {
        Some(Verdict::NotHttp) => sniff_frames(first_bytes).map(|frames| {
            if frames {
                Verdict::Http2Joined
            } else if dir == Direction::Ingress || looks_like_text(first_bytes) {
                Verdict::Http1Joined
            } else {
                Verdict::NotHttp
            }
        }),
        // A start line longer than any head we would accept is not one.
        None if first_bytes.len() > max_head => Some(Verdict::NotHttp),
        verdict => verdict,
    }
}

/// Turns ordered segments into exchanges, per connection.
pub struct HttpTracker {
    limits: HttpLimits,
    follows_response: ResponseFilter,
    conns: HashMap<ConnKey, Connection, ConnHash>,
    stats: HttpStats,
    /// What stopped being followed since the last [`Self::take_unfollowed`].
    unfollowed: Vec<Unfollowed>,
    /// See [`Self::take_calls_sent`].
    calls_sent: Vec<ConnKey>,
}

impl HttpTracker {
    pub fn new(limits: HttpLimits, follows_response: ResponseFilter) -> Self {
        Self {
            limits,
            follows_response,
            conns: HashMap::default(),
            stats: HttpStats::default(),
            unfollowed: Vec::new(),
            calls_sent: Vec::new(),
        }
    }

    /// What is no longer followed since the last call (connections: server side, not HTTP,
    /// upgraded; responses to requests that are not LLM calls): the capture stage can stop
    /// copying those bytes.
    pub fn take_unfollowed(&mut self) -> Vec<Unfollowed> {
        std::mem::take(&mut self.unfollowed)
    }

    /// The connections that sent a whole request the response filter follows since the last
    /// call, once per request: the process makes calls, known before the response is read
    /// (an agent may start a command as soon as it has its answer).
    pub fn take_calls_sent(&mut self) -> Vec<ConnKey> {
        std::mem::take(&mut self.calls_sent)
    }

    pub fn stats(&self) -> HttpStats {
        self.stats
    }

    /// Whether one of the process's connections has a request open that the response filter
    /// would follow: an LLM call may be under way.
    pub fn call_in_flight(&self, pid: u32) -> bool {
        self.conns.iter().any(|(key, conn)| {
            key.pid == pid
                && match &conn.protocol {
                    Protocol::Following(followed) => followed.call_in_flight(self.follows_response),
                    Protocol::Sniffing(_) | Protocol::Ignored(_) => false,
                }
        })
    }

    /// Whether any connection of the process reached this stage (whatever it carried).
    pub fn knows_process(&self, pid: u32) -> bool {
        self.conns.keys().any(|key| key.pid == pid)
    }

    pub fn on_segment(&mut self, seg: Segment, out: &mut Vec<Exchange>) {
        if seg.gap_before > 0 {
            self.stats.gaps += 1;
        }
        if !self.conns.contains_key(&seg.conn) {
            self.make_room(out);
        }
        let conn = self.conns.entry(seg.conn).or_insert_with(|| Connection {
            library: seg.library,
            last_ts: seg.ts,
            protocol: Protocol::Sniffing(Vec::new()),
        });
        conn.last_ts = conn.last_ts.max(seg.ts);
        let mut cx = Cx {
            limits: &self.limits,
            stats: &mut self.stats,
            conn: seg.conn,
            library: conn.library,
            follows_response: self.follows_response,
            unfollowed: &mut self.unfollowed,
            calls_sent: &mut self.calls_sent,
        };
        match &mut conn.protocol {
            Protocol::Sniffing(held) => {
                held.push(seg);
                if let Some(decided) = decide(held, &mut cx, out) {
                    conn.protocol = decided;
                }
            }
            Protocol::Following(followed) => {
                followed.on_segment(&seg, &mut cx, out);
                if let Some(because) = followed.stopped() {
                    conn.protocol = Protocol::ignored(because, cx.stats);
                }
            }
            Protocol::Ignored(because) => {
                if *because == IgnoredBecause::NotHttp {
                    self.stats.reads_after_not_http += 1;
                }
                return;
            }
        }
        if matches!(conn.protocol, Protocol::Ignored(_)) {
            cx.unfollowed.push(Unfollowed::Connection(cx.conn));
        }
    }

    /// The connection ended: hands over its open exchanges as `ConnectionClosed`.
    pub fn on_conn_end(&mut self, conn: ConnKey, ts: u64, out: &mut Vec<Exchange>) {
        let reason = CloseReason {
            end: ExchangeEnd::ConnectionClosed,
            problem: "connection closed",
            conn_closed: true,
        };
        self.close(conn, reason, ts, out);
    }

    /// The process ended: all its connections did.
    pub fn on_process_exit(&mut self, pid: u32, ts: u64, out: &mut Vec<Exchange>) {
        let conns: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|c| c.pid == pid)
            .copied()
            .collect();
        for conn in conns {
            self.on_conn_end(conn, ts, out);
        }
    }

    /// The observer is stopping: hands over every open exchange as `ObserverStopped`.
    pub fn flush_all(&mut self, ts: u64, out: &mut Vec<Exchange>) {
        let reason = CloseReason {
            end: ExchangeEnd::ObserverStopped,
            problem: "observer stopped",
            conn_closed: false,
        };
        let conns: Vec<ConnKey> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close(conn, reason, ts, out);
        }
    }

    fn close(&mut self, key: ConnKey, reason: CloseReason, ts: u64, out: &mut Vec<Exchange>) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        let mut cx = Cx {
            limits: &self.limits,
            stats: &mut self.stats,
            conn: key,
            library: conn.library,
            follows_response: self.follows_response,
            unfollowed: &mut self.unfollowed,
            calls_sent: &mut self.calls_sent,
        };
        log::trace!("{key:?}: closing at {ts}: {}", reason.problem);
        if let Protocol::Following(mut followed) = conn.protocol {
            followed.close(reason, &mut cx, out);
        }
    }

    /// At the connection cap, drops the least recently active sixteenth of the connections, so
    /// the scan is paid once per many new connections rather than once per connection.
    fn make_room(&mut self, out: &mut Vec<Exchange>) {
        if self.conns.len() < self.limits.max_connections {
            return;
        }
        let mut by_age: Vec<(u64, ConnKey)> =
            self.conns.iter().map(|(k, c)| (c.last_ts, *k)).collect();
        let evict = (by_age.len() / 16).max(1);
        by_age.select_nth_unstable(evict - 1);
        let reason = CloseReason {
            end: ExchangeEnd::DataLost,
            problem: "connection evicted: too many connections",
            conn_closed: false,
        };
        for &(ts, key) in &by_age[..evict] {
            self.stats.connections_evicted += 1;
            self.close(key, reason, ts, out);
        }
    }
}

/// Decides a connection's protocol once its first bytes allow; replays them into its parser.
fn decide(held: &mut Vec<Segment>, cx: &mut Cx, out: &mut Vec<Exchange>) -> Option<Protocol> {
    let first_dir = held.first()?.dir;
    let max_head = cx.limits.max_header_bytes;
    let held_bytes: usize = held.iter().map(|s| s.data.len()).sum();
    let verdict = if held_bytes > 2 * max_head {
        // Only possible with bytes flowing both ways before a start line: not HTTP/1.
        Verdict::NotHttp
    } else {
        classify(first_dir, &first_bytes(held, first_dir), max_head)?
    };
    let joined = match verdict {
        Verdict::Http1Joined | Verdict::Http2Joined => true,
        // A response first: its request was written before the capture started.
        Verdict::Http1Client => first_dir == Direction::Ingress,
        _ => false,
    };
    cx.stats.joined_mid_stream += u64::from(joined);
    let mut followed: Box<dyn ProtocolConn> = match verdict {
        Verdict::Http1Client => Box::new(Http1Conn::new()),
        Verdict::Http1Joined => Box::new(Http1Conn::joined()),
        Verdict::Http2Client | Verdict::Http2Joined => {
            cx.stats.http2_connections += 1;
            Box::new(Http2Conn::new(verdict == Verdict::Http2Joined))
        }
        Verdict::ServerSide => {
            return Some(Protocol::ignored(IgnoredBecause::ServerSide, cx.stats));
        }
        Verdict::NotHttp => return Some(Protocol::ignored(IgnoredBecause::NotHttp, cx.stats)),
    };
    for seg in held.drain(..) {
        followed.on_segment(&seg, cx, out);
    }
    Some(match followed.stopped() {
        Some(because) => Protocol::ignored(because, cx.stats),
        None => Protocol::Following(followed),
    })
}

/// Whether bytes that start no message look like the middle of a textual one (JSON, SSE, a
/// chunk size line) rather than a binary protocol: no control bytes but whitespace.
fn looks_like_text(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .take(64)
        .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\r' | b'\n'))
}

/// The bytes read so far in `dir`, copied only when they span several segments.
fn first_bytes(held: &[Segment], dir: Direction) -> Cow<'_, [u8]> {
    let mut in_dir = held.iter().filter(|s| s.dir == dir);
    match (in_dir.next(), in_dir.next()) {
        (Some(only), None) => Cow::Borrowed(&only.data[..]),
        _ => Cow::Owned(
            held.iter()
                .filter(|s| s.dir == dir)
                .map(|s| &s.data[..])
                .collect::<Vec<_>>()
                .concat(),
        ),
    }
}

/// Reassembly and HTTP together: what the pipeline feeds capture events into.
pub struct ConnectionStage {
    reassembler: Reassembler,
    http: HttpTracker,
    /// Reused between events to avoid an allocation per chunk.
    segments: Vec<Segment>,
}

impl Default for ConnectionStage {
    fn default() -> Self {
        Self::new(ReassemblyLimits::default(), HttpLimits::default())
    }
}

impl ConnectionStage {
    /// Follows every response.
    pub fn new(reassembly: ReassemblyLimits, http: HttpLimits) -> Self {
        Self::with_response_filter(reassembly, http, follow_every_response)
    }

    /// Reads only the responses `follows_response` wants (HTTP/1; HTTP/2 streams share the
    /// connection, so all are read).
    pub fn with_response_filter(
        reassembly: ReassemblyLimits,
        http: HttpLimits,
        follows_response: ResponseFilter,
    ) -> Self {
        Self {
            reassembler: Reassembler::new(reassembly),
            http: HttpTracker::new(http, follows_response),
            segments: Vec::new(),
        }
    }

    /// Reassembly takes the input; the segments it releases go to HTTP, which pushes the
    /// exchanges they complete to `out`.
    pub fn push(&mut self, input: StreamInput, out: &mut Vec<Exchange>) {
        match input {
            StreamInput::Chunk(chunk) => {
                let ts = chunk.ts;
                self.reassembler.push(chunk, &mut self.segments);
                self.reassembler.expire(ts, &mut self.segments);
                self.forward(out);
            }
            StreamInput::ConnectionEnd { conn, ts } => {
                self.reassembler.end_conn(conn, &mut self.segments);
                self.forward(out);
                self.http.on_conn_end(conn, ts, out);
            }
            // A new program image has none of the old one's TLS sessions.
            StreamInput::ProcessEnd { pid, ts } => {
                self.reassembler.end_process(pid, &mut self.segments);
                self.forward(out);
                self.http.on_process_exit(pid, ts, out);
            }
        }
    }

    /// The observer is stopping: releases everything held and hands over every open exchange.
    pub fn flush_all(&mut self, ts: u64, out: &mut Vec<Exchange>) {
        self.reassembler.release_all_pending(&mut self.segments);
        self.forward(out);
        self.http.flush_all(ts, out);
    }

    pub fn stats(&self) -> HttpStats {
        self.http.stats()
    }

    /// See [`HttpTracker::call_in_flight`].
    pub fn call_in_flight(&self, pid: u32) -> bool {
        self.http.call_in_flight(pid)
    }

    /// See [`HttpTracker::knows_process`].
    pub fn knows_process(&self, pid: u32) -> bool {
        self.http.knows_process(pid)
    }

    /// See [`HttpTracker::take_unfollowed`].
    pub fn take_unfollowed(&mut self) -> Vec<Unfollowed> {
        self.http.take_unfollowed()
    }

    /// See [`HttpTracker::take_calls_sent`].
    pub fn take_calls_sent(&mut self) -> Vec<ConnKey> {
        self.http.take_calls_sent()
    }

    pub fn reassembly_stats(&self) -> ReassemblyStats {
        self.reassembler.stats()
    }

    fn forward(&mut self, out: &mut Vec<Exchange>) {
        for seg in self.segments.drain(..) {
            self.http.on_segment(seg, out);
        }
    }
}

#[cfg(test)]
mod tests;
