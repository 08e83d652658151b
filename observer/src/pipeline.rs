//! The stages wired together: capture events in, spans out to the sinks.
//! `observer capture` feeds it from the kernel, `observer replay` from a recording.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::{
    capture::{CaptureEvent, CaptureLosses, ConnHash, ConnKey, Feedback, record::RecordWriter},
    http::{ConnectionStage, Exchange, HttpLimits, HttpStats},
    link::Linker,
    llm,
    metrics::{Metrics, PipelineTotals},
    reassemble::ReassemblyLimits,
    sink::{Sink, Summary},
    span::{self, Endpoints, ProcessInfo, Span},
};

/// Processes remembered for naming spans; past this they are forgotten.
const MAX_PROCESSES: usize = 65_536;
/// Connections whose socket addresses are remembered; past this they are forgotten.
const MAX_SOCKETS: usize = 65_536;

pub struct Pipeline {
    connections: ConnectionStage,
    processes: HashMap<u32, ProcessInfo>,
    sockets: HashMap<ConnKey, Endpoints, ConnHash>,
    comm_filter: Vec<String>,
    linker: Linker,
    sinks: Vec<Box<dyn Sink>>,
    recorder: Option<RecordWriter>,
    summary: Summary,
    exchanges: Vec<Exchange>,
    stats: PipelineStats,
    metrics: Option<Arc<Metrics>>,
    /// When the health metrics were last brought up to date.
    metrics_updated: u64,
    /// Told what the pipeline no longer follows and which processes make LLM calls (live
    /// capture: what the probes copy and which processes they follow).
    on_feedback: Option<Box<dyn FnMut(Feedback) + Send>>,
    /// Processes seen making LLM calls, each told once through `on_feedback`.
    llm_clients: HashSet<u32>,
    /// What the capture reported it could not see, as its latest totals.
    capture_losses: CaptureLosses,
}

enum Ended {
    Process(u32),
    Connection(ConnKey),
}

/// How often (event time) the health metrics are brought up to date.
const METRICS_INTERVAL_NS: u64 = 1_000_000_000;

pub struct Report {
    pub summary: Summary,
    pub stats: PipelineStats,
    pub http: HttpStats,
    pub capture: CaptureLosses,
}

impl Report {
    pub fn given_up(&self) -> [GivenUp; GIVEN_UP_REASONS] {
        given_up(&self.http, &self.capture)
    }
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

impl Pipeline {
    pub fn new(
        sinks: Vec<Box<dyn Sink>>,
        comm_filter: Vec<String>,
        recorder: Option<RecordWriter>,
    ) -> Pipeline {
        Pipeline {
            connections: ConnectionStage::with_response_filter(
                ReassemblyLimits::default(),
                HttpLimits::default(),
                llm::is_llm_request,
            ),
            processes: HashMap::new(),
            sockets: HashMap::default(),
            comm_filter,
            linker: Linker::default(),
            sinks,
            recorder,
            summary: Summary::default(),
            exchanges: Vec::new(),
            stats: PipelineStats::default(),
            metrics: None,
            metrics_updated: 0,
            on_feedback: None,
            llm_clients: HashSet::new(),
            capture_losses: CaptureLosses::default(),
        }
    }

    /// Keeps `metrics` up to date with every span and the pipeline's health.
    pub fn report_to(&mut self, metrics: Arc<Metrics>) {
        self.metrics = Some(metrics);
    }

    /// Calls `hook` with what the capture stage should know: every connection or response the
    /// pipeline stops following, processes that make LLM calls, answers to costly processes.
    pub fn on_feedback(&mut self, hook: Box<dyn FnMut(Feedback) + Send>) {
        self.on_feedback = Some(hook);
    }

    fn tell(&mut self, feedback: Feedback) {
        if let Some(hook) = &mut self.on_feedback {
            hook(feedback);
        }
    }

    pub fn on_event(&mut self, event: CaptureEvent) {
        self.stats.events += 1;
        if let Some(recorder) = &mut self.recorder
            && let Err(error) = recorder.write(&event)
        {
            log::error!("recording stopped: {error:#}");
            self.recorder = None;
        }
        match &event {
            CaptureEvent::Exec {
                pid, path, comm, ..
            } => {
                if self.processes.len() >= MAX_PROCESSES {
                    self.processes.clear();
                }
                self.processes.insert(
                    *pid,
                    ProcessInfo {
                        executable_path: path.clone(),
                        comm: comm.clone(),
                        container_id: None,
                    },
                );
            }
            CaptureEvent::Data(chunk) => {
                if !self.wanted(chunk.conn.pid) {
                    return;
                }
                self.stats.bytes += chunk.data.len() as u64;
            }
            CaptureEvent::Socket {
                conn, peer, local, ..
            } => {
                if self.sockets.len() >= MAX_SOCKETS {
                    self.sockets.clear();
                }
                self.sockets.insert(
                    *conn,
                    Endpoints {
                        peer: *peer,
                        local: *local,
                    },
                );
            }
            CaptureEvent::Container { pid, id, .. } => {
                if let Some(process) = self.processes.get_mut(pid) {
                    process.container_id = Some(id.clone());
                }
            }
            CaptureEvent::Costly { pid, .. } => {
                let calls_in_flight =
                    self.llm_clients.contains(pid) || self.connections.call_in_flight(*pid);
                self.tell(Feedback::Judged {
                    pid: *pid,
                    calls_in_flight,
                });
            }
            CaptureEvent::Losses { totals, .. } => self.capture_losses = *totals,
            CaptureEvent::ConnEnd { .. } | CaptureEvent::Exit { .. } => {}
        }
        let ended = match &event {
            CaptureEvent::Exit { pid, .. } => Some(Ended::Process(*pid)),
            CaptureEvent::ConnEnd { conn, .. } => Some(Ended::Connection(*conn)),
            _ => None,
        };
        let ts = event.ts();
        let mut exchanges = std::mem::take(&mut self.exchanges);
        self.connections.on_event(event, &mut exchanges);
        for unfollowed in self.connections.take_unfollowed() {
            self.tell(Feedback::Unfollowed(unfollowed));
        }
        self.emit(&mut exchanges);
        self.exchanges = exchanges;
        // Forgotten only once the spans they name are out.
        match ended {
            Some(Ended::Process(pid)) => {
                let roots = self.linker.process_exited(pid);
                self.write_all(roots);
                self.processes.remove(&pid);
                self.llm_clients.remove(&pid);
                self.sockets.retain(|conn, _| conn.pid != pid);
            }
            Some(Ended::Connection(conn)) => {
                self.sockets.remove(&conn);
            }
            None => {}
        }
        self.tick(ts);
    }

    /// Time has passed (Unix nanoseconds): writes the roots of agent runs that went idle.
    /// Called on every event, and by a live source when no events come.
    pub fn tick(&mut self, now: u64) {
        let roots = self.linker.close_idle(now);
        self.write_all(roots);
        if let Some(metrics) = &self.metrics
            && now >= self.metrics_updated.saturating_add(METRICS_INTERVAL_NS)
        {
            self.metrics_updated = now;
            let http = self.connections.stats();
            let totals = PipelineTotals {
                events: self.stats.events,
                bytes: self.stats.bytes,
                parse_failures: http.parse_failures,
                spans: self.stats.spans,
                given_up: given_up(&http, &self.capture_losses),
            };
            let queues: Vec<_> = self.sinks.iter().filter_map(|sink| sink.queue()).collect();
            metrics.update_pipeline(totals, &queues);
        }
    }

    /// The source has ended (or the observer is stopping): every open exchange becomes a span.
    pub fn finish(&mut self, ts: u64) {
        let mut exchanges = std::mem::take(&mut self.exchanges);
        self.connections.flush_all(ts, &mut exchanges);
        self.emit(&mut exchanges);
        let roots = self.linker.finish();
        self.write_all(roots);
        for sink in &mut self.sinks {
            if let Err(error) = sink.flush() {
                log::error!("flushing a sink failed: {error:#}");
            }
        }
        if let Some(recorder) = self.recorder.take()
            && let Err(error) = recorder.finish()
        {
            log::error!("finishing the recording failed: {error:#}");
        }
    }

    /// What is left once the source has ended: the summary and the counters.
    pub fn into_report(self) -> Report {
        Report {
            summary: self.summary,
            stats: self.stats,
            http: self.connections.stats(),
            capture: self.capture_losses,
        }
    }

    fn wanted(&self, pid: u32) -> bool {
        if self.comm_filter.is_empty() {
            return true;
        }
        let Some(process) = self.processes.get(&pid) else {
            return false;
        };
        self.comm_filter
            .iter()
            .any(|name| *name == process.comm || name == process.executable_name())
    }

    fn emit(&mut self, exchanges: &mut Vec<Exchange>) {
        for exchange in exchanges.drain(..) {
            let Some(mut call) = llm::recognise(&exchange) else {
                self.stats.other_exchanges += 1;
                continue;
            };
            if self.llm_clients.len() < MAX_PROCESSES && self.llm_clients.insert(exchange.conn.pid)
            {
                self.tell(Feedback::LlmClient(exchange.conn.pid));
            }
            let keys = std::mem::take(&mut call.link);
            let unknown = ProcessInfo::default();
            let process = self.processes.get(&exchange.conn.pid).unwrap_or(&unknown);
            let endpoints = self.sockets.get(&exchange.conn);
            let span = span::build(&exchange, call, process, endpoints);
            let spans = self.linker.link(&exchange, &keys, span);
            self.write_all(spans);
        }
    }

    fn write_all(&mut self, spans: Vec<Span>) {
        for span in spans {
            self.stats.spans += 1;
            if span.is_call() {
                self.summary.record(&span);
            }
            if let Some(metrics) = &self.metrics {
                metrics.record_span(&span);
            }
            for sink in &mut self.sinks {
                if let Err(error) = sink.write(&span) {
                    self.stats.sink_errors += 1;
                    log::error!("writing a span failed: {error:#}");
                }
            }
        }
    }
}
