//! The stages wired together: capture events in, spans out to the sinks.
//! `observer capture` feeds it from the kernel, `observer replay` from a recording.
//!
//! capture event → [record] → callers (who is calling) → reassemble + http (exchanges)
//! → llm (calls and link keys) → span → link (trace identity) → sinks.
use crate::{
    callers::Callers,
    capture::{
        CaptureEvent, CaptureLosses, ConnKey, Feedback, TlsLibrary, feedback::FeedbackChannel,
        record::RecordWriter,
    },
    health::{ActionLosses, PipelineStats, PipelineTotals, Report, given_up},
    http::{ConnectionStage, Exchange, HttpLimits},
    link::{CallSite, LinkOptions, Linker},
    llm::{self, LlmStage, Recognised},
    mcp,
    reassemble::{ReassemblyLimits, StreamInput},
    sink::{Sink, Sinks},
    span,
};

/// How often (event time) the sinks hear of the pipeline's health.
const HEALTH_INTERVAL_NS: u64 = 1_000_000_000;

pub struct Pipeline {
    recorder: Option<RecordWriter>,
    callers: Callers,
    connections: ConnectionStage,
    llm: LlmStage,
    /// MCP on the pipes of agents and the servers they started.
    stdio: mcp::StdioStage,
    linker: Linker,
    sinks: Sinks,
    feedback: FeedbackChannel,
    /// Exchanges the HTTP stage completed, kept to reuse the allocation.
    exchanges: Vec<Exchange>,
    stats: PipelineStats,
    /// What the capture reported it could not see, as its latest totals.
    capture_losses: CaptureLosses,
    /// When the sinks last heard of the pipeline's health.
    health_reported: u64,
}

impl Pipeline {
    pub fn new(llm: LlmStage, sinks: Vec<Box<dyn Sink>>) -> Pipeline {
        let link_options = LinkOptions {
            content: llm.content.mode,
            ..LinkOptions::default()
        };
        Pipeline {
            recorder: None,
            callers: Callers::default(),
            connections: ConnectionStage::with_response_filter(
                ReassemblyLimits::default(),
                HttpLimits::default(),
                |request| llm::is_llm_request(request) || mcp::is_mcp_request(request),
            ),
            llm,
            stdio: mcp::StdioStage::default(),
            linker: Linker::new(link_options),
            sinks: Sinks::new(sinks),
            feedback: FeedbackChannel::default(),
            exchanges: Vec::new(),
            stats: PipelineStats::default(),
            capture_losses: CaptureLosses::default(),
            health_reported: 0,
        }
    }

    /// Only calls of processes with one of these command or executable names (all when empty).
    pub fn wanting(mut self, names: Vec<String>) -> Pipeline {
        self.callers = Callers::wanting(names);
        self
    }

    /// Writes every event to `recorder`, as it comes.
    pub fn recording(mut self, recorder: Option<RecordWriter>) -> Pipeline {
        self.recorder = recorder;
        self
    }

    /// Tells the live capture, through `hook`, what it should know: connections and responses
    /// the pipeline stops following, processes that make LLM calls, answers about costly ones.
    pub fn feeding_back(mut self, hook: Box<dyn FnMut(Feedback) + Send>) -> Pipeline {
        self.feedback = FeedbackChannel::to(hook);
        self
    }

    pub fn on_event(&mut self, event: CaptureEvent) {
        self.stats.events += 1;
        self.record(&event);
        self.callers.learn(&event);
        match &event {
            CaptureEvent::Data(chunk) if !self.callers.wanted(chunk.conn.pid) => return,
            CaptureEvent::Data(chunk) if chunk.library == TlsLibrary::Pipe => {
                self.stats.bytes += chunk.data.len() as u64;
                let mut calls = Vec::new();
                self.stdio.chunk(chunk, &mut calls);
                for unfollowed in self.stdio.take_unfollowed() {
                    self.feedback.unfollowed(unfollowed);
                }
                self.mcp_calls(chunk.conn, calls);
                self.tick(chunk.ts);
                return;
            }
            CaptureEvent::Data(chunk) => self.stats.bytes += chunk.data.len() as u64,
            CaptureEvent::Pipe { conn, peer, fd, .. } => {
                log::debug!("fd {fd} of process {} is a pipe to {peer:?}: MCP", conn.pid);
                self.stdio.pipe(*conn, *peer);
            }
            CaptureEvent::Costly { pid, .. } => {
                let in_flight = self.connections.call_in_flight(*pid);
                let seen = self.connections.knows_process(*pid);
                self.feedback.judged(*pid, in_flight, seen);
            }
            CaptureEvent::Losses { totals, .. } => self.capture_losses = *totals,
            CaptureEvent::Command(command) => {
                let spans = self.linker.command_started(command);
                self.sinks.write_all(spans);
            }
            CaptureEvent::CommandExit { pid, ts, ending } => {
                let spans = self.linker.command_ended(*pid, *ts, *ending);
                self.sinks.write_all(spans);
            }
            _ => {}
        }
        let ts = event.ts();
        let ended = Ended::by(&event);
        let mut exchanges = std::mem::take(&mut self.exchanges);
        if let Some(input) = StreamInput::of(event) {
            self.connections.push(input, &mut exchanges);
        }
        for unfollowed in self.connections.take_unfollowed() {
            self.feedback.unfollowed(unfollowed);
        }
        for conn in self.connections.take_calls_sent() {
            self.feedback.llm_client(conn.pid, ts);
        }
        for exchange in exchanges.drain(..) {
            self.call(&exchange);
        }
        self.exchanges = exchanges;
        // Forgotten only once the spans that name them are out.
        match ended {
            Some(Ended::Process(pid)) => {
                let calls = self.stdio.process_ended(pid, ts);
                self.mcp_calls(ConnKey { pid, conn: 0 }, calls);
                let roots = self.linker.process_exited(pid, ts);
                self.sinks.write_all(roots);
                self.callers.process_ended(pid);
                self.feedback.process_ended(pid);
            }
            Some(Ended::Connection(conn)) => {
                let calls = self.stdio.pipe_ended(&conn, ts);
                self.mcp_calls(conn, calls);
                self.callers.connection_ended(&conn);
            }
            None => {}
        }
        self.tick(ts);
    }

    /// Time has passed (Unix nanoseconds): writes the roots of agent runs that went idle.
    /// Called on every event, and by a live source when no events come.
    pub fn tick(&mut self, now: u64) {
        let roots = self.linker.close_idle(now);
        self.sinks.write_all(roots);
        if now >= self.health_reported.saturating_add(HEALTH_INTERVAL_NS) {
            self.health_reported = now;
            self.report_health();
        }
    }

    /// The source has ended (or the observer is stopping): every open exchange becomes a span.
    pub fn finish(&mut self, ts: u64) {
        let mut exchanges = std::mem::take(&mut self.exchanges);
        self.connections.flush_all(ts, &mut exchanges);
        for exchange in exchanges.drain(..) {
            self.call(&exchange);
        }
        let roots = self.linker.finish(ts);
        self.sinks.write_all(roots);
        self.sinks.flush();
        // After the flush, so that the last health heard counts what the sinks delivered.
        self.report_health();
        if let Some(recorder) = self.recorder.take()
            && let Err(error) = recorder.finish()
        {
            log::error!("finishing the recording failed: {error:#}");
        }
    }

    pub fn into_report(self) -> Report {
        Report {
            stats: PipelineStats {
                spans: self.sinks.written,
                sink_errors: self.sinks.errors,
                ..self.stats
            },
            http: self.connections.stats(),
            reassembly: self.connections.reassembly_stats(),
            capture: self.capture_losses,
            actions: self.action_losses(),
        }
    }

    fn action_losses(&self) -> ActionLosses {
        ActionLosses {
            commands: self.linker.command_stats(),
            stdio: self.stdio.stats,
        }
    }

    fn record(&mut self, event: &CaptureEvent) {
        if let Some(recorder) = &mut self.recorder
            && let Err(error) = recorder.write(event)
        {
            log::error!("recording stopped: {error:#}");
            self.recorder = None;
        }
    }

    /// One exchange through the llm (or mcp), span and link stages, to the sinks.
    fn call(&mut self, exchange: &Exchange) {
        let Some(Recognised { call, keys }) = self.llm.recognise(exchange) else {
            self.mcp(exchange);
            return;
        };
        self.feedback
            .llm_client(exchange.conn.pid, exchange.request.ts_start);
        let caller = self.callers.of(&exchange.conn);
        let span = span::build(exchange, call, caller.process, caller.endpoints);
        let site = CallSite {
            pid: exchange.conn.pid,
            tid: exchange.tid,
            conn: exchange.conn.conn,
        };
        let spans = self.linker.link(site, &keys, span);
        self.sinks.write_all(spans);
    }

    /// The MCP requests an exchange carries, if it carries any, through the link stage.
    fn mcp(&mut self, exchange: &Exchange) {
        let calls = mcp::recognise(exchange);
        if calls.is_empty() {
            self.stats.other_exchanges += 1;
            return;
        }
        self.mcp_calls(exchange.conn, calls);
    }

    /// MCP requests made on `conn` (HTTP, or a pipe) through the link stage, to the sinks.
    fn mcp_calls(&mut self, conn: ConnKey, calls: Vec<mcp::McpCall>) {
        for call in calls {
            let caller = self.callers.of(&conn);
            let span = call.span(
                caller.process,
                caller.endpoints,
                conn.pid,
                self.llm.content.mode,
            );
            let tool = call.tool_name().zip(call.tool_arguments());
            let spans = self.linker.mcp_request(conn.pid, tool, span);
            self.sinks.write_all(spans);
        }
    }

    fn report_health(&mut self) {
        let http = self.connections.stats();
        self.sinks.health(&PipelineTotals {
            events: self.stats.events,
            bytes: self.stats.bytes,
            parse_failures: http.parse_failures,
            spans: self.sinks.written,
            given_up: given_up(&http, &self.capture_losses, &self.action_losses()),
            http,
            reassembly: self.connections.reassembly_stats(),
        });
    }
}

/// What an event ends, to be forgotten once its spans are out.
enum Ended {
    Process(u32),
    Connection(ConnKey),
}

impl Ended {
    fn by(event: &CaptureEvent) -> Option<Ended> {
        match event {
            CaptureEvent::Exit { pid, .. } => Some(Ended::Process(*pid)),
            CaptureEvent::ConnEnd { conn, .. } => Some(Ended::Connection(*conn)),
            _ => None,
        }
    }
}
