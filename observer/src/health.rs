//! The observer's own health: what it could not turn into spans, by reason, for the summary,
//! the metrics and the recordings.
use crate::{
    capture::CaptureLosses, http::HttpStats, link::CommandStats, mcp::StdioStats,
    reassemble::ReassemblyStats,
};

/// What is left once the source has ended: the counters.
pub struct Report {
    pub stats: PipelineStats,
    pub http: HttpStats,
    pub reassembly: ReassemblyStats,
    pub capture: CaptureLosses,
    pub actions: ActionLosses,
}

impl Report {
    pub fn given_up(&self) -> [GivenUp; GIVEN_UP_REASONS] {
        given_up(&self.http, &self.capture, &self.actions)
    }
}

/// What the observer could not make of what agents did between their calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActionLosses {
    pub commands: CommandStats,
    pub stdio: StdioStats,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineStats {
    pub events: u64,
    pub bytes: u64,
    /// Every span written: calls, and the runs' roots and tool executions the link stage infers.
    pub spans: u64,
    /// HTTP exchanges that no provider recognised as an LLM call.
    pub other_exchanges: u64,
    pub sink_errors: u64,
}

/// Data the observer could not turn into spans, for one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GivenUp {
    /// The metric label.
    pub reason: &'static str,
    /// What was given up, for people ("connections joined mid-stream").
    pub what: &'static str,
    pub count: u64,
}

pub const GIVEN_UP_REASONS: usize = 19;

/// Everything the capture and HTTP stages gave up on, by reason: all zero means no byte the
/// probes saw, and no call made while a process was followed, went unreported.
pub fn given_up(
    http: &HttpStats,
    capture: &CaptureLosses,
    actions: &ActionLosses,
) -> [GivenUp; GIVEN_UP_REASONS] {
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
        entry(
            "commands_over_bound",
            "commands past the bounds on a run's commands",
            actions.commands.over_bound,
        ),
        entry(
            "mcp_line_unreadable",
            "MCP stdio lines that were not JSON-RPC or too long",
            actions.stdio.unreadable_lines,
        ),
        entry(
            "mcp_bytes_lost",
            "gaps of lost bytes on MCP pipes",
            actions.stdio.gaps,
        ),
        entry(
            "mcp_request_dropped",
            "MCP requests dropped unanswered at the cap, or pipes past it",
            actions.stdio.requests_dropped + actions.stdio.pipes_over_bound,
        ),
    ]
}

/// What the pipeline counts of its own work, as totals since start.
#[derive(Clone, Copy, Debug)]
pub struct PipelineTotals {
    pub events: u64,
    pub bytes: u64,
    pub parse_failures: u64,
    pub spans: u64,
    pub given_up: [GivenUp; GIVEN_UP_REASONS],
    pub http: HttpStats,
    pub reassembly: ReassemblyStats,
}

/// A sink's queue, for the health metrics and the summary.
#[derive(Clone, Copy, Debug)]
pub struct QueueHealth {
    pub name: &'static str,
    pub depth: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// What became of the spans, for a sink that exports them.
    pub export: Option<ExportHealth>,
}

/// An exporter's spans by outcome, as totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportHealth {
    /// Accepted by the receiver.
    pub exported: u64,
    /// Refused by the receiver (a permanent error, or a partial success's rejected spans).
    pub rejected: u64,
    /// Given up: the receiver did not take them within the retry time, or before the observer
    /// stopped (without the store).
    pub expired: u64,
    /// Deleted by the store's retention before they were exported (the receiver was away
    /// longer than the store keeps spans).
    pub pruned: u64,
}

impl ExportHealth {
    /// Each outcome with its metric label and what it means, for people.
    pub fn outcomes(&self) -> [(&'static str, &'static str, u64); 4] {
        [
            ("exported", "exported", self.exported),
            ("rejected", "rejected by the receiver", self.rejected),
            ("expired", "given up unsent", self.expired),
            ("pruned", "pruned from the store before export", self.pruned),
        ]
    }
}
