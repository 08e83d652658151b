//! The observer's own health: what it could not turn into spans, by reason, for the summary,
//! the metrics and the recordings.
use crate::{capture::CaptureLosses, http::HttpStats};

/// Data the observer could not turn into spans, for one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GivenUp {
    /// The metric label.
    pub reason: &'static str,
    /// What was given up, for people ("connections joined mid-stream").
    pub what: &'static str,
    pub count: u64,
}

pub const GIVEN_UP_REASONS: usize = 15;

/// Everything the capture and HTTP stages gave up on, by reason: all zero means no byte the
/// probes saw, and no call made while a process was followed, went unreported.
pub fn given_up(http: &HttpStats, capture: &CaptureLosses) -> [GivenUp; GIVEN_UP_REASONS] {
    let entry = |reason, what, count| GivenUp {
        reason,
        what,
        count,
    };
    [
        entry(
            "ring_buffer_full",
            "events lost in a full ring buffer",
            capture.events_lost,
        ),
        entry(
            "call_truncated",
            "TLS calls cut at the copy limit",
            capture.calls_truncated,
        ),
        entry(
            "read_fault",
            "buffers the probes could not read",
            capture.read_faults,
        ),
        entry(
            "attached_late",
            "processes followed with connections already open",
            capture.attached_late,
        ),
        entry(
            "joined_mid_stream",
            "connections joined mid-stream",
            http.joined_mid_stream,
        ),
        entry(
            "bytes_skipped",
            "bytes skipped to find a message start",
            http.resync_skipped_bytes,
        ),
        entry("bytes_lost", "gaps of lost bytes", http.gaps),
        entry(
            "response_without_request",
            "responses with no request",
            http.unmatched_responses,
        ),
        entry(
            "http2_head_unreadable",
            "HTTP/2 heads that could not be decoded",
            http.http2_hpack_unknown,
        ),
        entry(
            "stream_evicted",
            "HTTP/2 streams evicted at the cap",
            http.http2_streams_evicted,
        ),
        entry(
            "connection_evicted",
            "connections evicted at the cap",
            http.connections_evicted,
        ),
        entry(
            "body_truncated",
            "bodies cut at the size limit",
            http.bodies_truncated,
        ),
        entry(
            "decode_failure",
            "bodies that failed to decompress",
            http.decode_failures,
        ),
        entry("parse_failure", "parse failures", http.parse_failures),
        entry(
            "read_after_not_http",
            "reads on connections judged not HTTP",
            http.reads_after_not_http,
        ),
    ]
}
