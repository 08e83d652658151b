//! The link stage: gives each call its place in a trace, from the surest signal to the weakest.
//!
//! 1. A W3C `traceparent` header: the application is traced already; the call joins that trace
//!    as a child of the caller's span ([`traceparent`]).
//! 2. Within a process, a call continues an agent run ([`run`]) when it names it
//!    (`previous_response_id`, a conversation or session id), answers a tool call the run
//!    asked for, or carries the run's conversation (its last request's messages followed by
//!    its answer; or, when the history was cut, that answer at least) ([`conversation`]).
//!    It then becomes a child of the run's `invoke_agent` root, with `observer.link.reason`
//!    and a span link to the call it follows; each tool call it answers becomes an inferred
//!    `execute_tool {name}` span covering the gap.
//! 3. Otherwise the call starts a run of its own, as the root of a new trace (a lone call is
//!    not an agent: the `invoke_agent` root exists only once a second call joins). A sub-agent's
//!    run is the exception: a run started by a process that is a command of another run, or in
//!    the same process while a tool call named for agents (`Task`) is under way, is a child
//!    `invoke_agent` of that command's or tool's span, in its trace. If it is
//!    not a fresh conversation and follows
//!    another call on the same thread and connection within `thread_gap`, it carries a span
//!    link to that call, reason `same_thread` ([`thread`]): a hint, not a parent.
//!
//! Concurrent calls stay apart: content only continues a call that had ended before the
//! request began, and the same-thread hint needs calls that do not overlap.
//!
//! What an agent does between its calls joins its run too: the programs its processes run
//! ([`commands`]), each under the `execute_tool` span of the tool call that asked for it when
//! one did, which then spans what was seen rather than the inferred gap; and the MCP requests
//! it makes ([`mcp`]), a `tools/call` under the tool call it carries out.
mod commands;
mod conversation;
mod mcp;
mod run;
mod thread;
mod traceparent;

#[cfg(test)]
mod tests;

use std::{collections::HashMap, time::Duration};

use rand::Rng;
use serde_json::json;

pub use self::{commands::CommandStats, run::CallSite};
use self::{
    commands::Commands,
    run::{CloseReason, Run},
    thread::Threads,
};
use crate::{
    capture::{Command, Ending},
    config::ContentMode,
    llm::LinkKeys,
    span::Span,
};

/// The attribute (on spans and on span links) that says why a span is where it is.
pub const REASON: &str = crate::llm::attr::OBSERVER_LINK_REASON;

#[derive(Clone, Copy, Debug)]
pub struct LinkOptions {
    /// A run with no call for this long is over: its root span is written.
    pub run_idle: Duration,
    /// How far apart two calls on one thread may be for the weak same-thread link.
    pub thread_gap: Duration,
    /// Runs open at most; past this the least recently active one closes.
    pub max_runs: usize,
    /// What command spans keep of the command line (`--content`).
    pub content: ContentMode,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            run_idle: Duration::from_secs(300),
            thread_gap: Duration::from_secs(30),
            max_runs: 10_000,
            content: ContentMode::Full,
        }
    }
}

/// Why a call joined the trace it is in, surest last (the order ranks competing runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Signal {
    ConversationOverlap,
    ToolCall,
    ConversationPrefix,
    ConversationId,
    PreviousResponse,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::ConversationOverlap => "conversation_overlap",
            Signal::ToolCall => "tool_call",
            Signal::ConversationPrefix => "conversation_prefix",
            Signal::ConversationId => "conversation_id",
            Signal::PreviousResponse => "previous_response_id",
        }
    }
}

pub struct Linker {
    options: LinkOptions,
    runs: HashMap<u64, Run>,
    next_run: u64,
    threads: Threads,
    commands: Commands,
    /// When idle runs were last looked for.
    last_sweep: u64,
}

impl Default for Linker {
    fn default() -> Self {
        Linker::new(LinkOptions::default())
    }
}

/// Idle runs are looked for at most this often (event time).
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

impl Linker {
    pub fn new(options: LinkOptions) -> Linker {
        Linker {
            options,
            runs: HashMap::new(),
            next_run: 0,
            threads: Threads::default(),
            commands: Commands::default(),
            last_sweep: 0,
        }
    }

    /// Places the call `span`, made at `site`: returns it with its trace identity, after any
    /// spans this makes known (inferred tool executions, roots of runs that have closed).
    pub fn link(&mut self, site: CallSite, keys: &LinkKeys, mut span: Span) -> Vec<Span> {
        let mut out = self.close_idle(span.start_time_unix_nano);
        span.span_id = new_span_id();
        let traceparent = keys.traceparent.as_deref().and_then(traceparent::parse);
        if let Some((trace_id, parent)) = traceparent {
            span.trace_id = trace_id;
            span.parent_span_id = Some(parent);
            span.attributes.insert(REASON.into(), json!("traceparent"));
        } else {
            let start = span.start_time_unix_nano;
            let found = conversation::find(self.runs.iter(), site, start, keys);
            let run = match found.and_then(|c| Some((self.runs.get_mut(&c.run)?, c))) {
                Some((run, continuation)) => {
                    run.join(&mut span, continuation.signal, &continuation.predecessor);
                    out.extend(run.answer_tools(keys, &span));
                    run
                }
                None => {
                    let gap = self.options.thread_gap.as_nanos() as u64;
                    let hint = match keys.starts_conversation {
                        true => None,
                        false => self.threads.predecessor(site, &span, gap),
                    }
                    .map(|(trace_id, span_id)| run::link(trace_id, span_id, "same_thread"));
                    let within = self.commands.enclosing(site.pid).or_else(|| {
                        self.runs
                            .values_mut()
                            .filter(|run| run.site.pid == site.pid)
                            .find_map(|run| run.sub_agent_tool(start))
                    });
                    let run = match within {
                        Some(within) => Run::start_within(&mut span, site, within),
                        None => Run::start(&mut span, site),
                    };
                    span.links.extend(hint);
                    self.next_run += 1;
                    self.runs.entry(self.next_run).or_insert(run)
                }
            };
            run.record(keys, &span);
        }
        self.threads.record(site, &span);
        let end = span.end_time_unix_nano;
        out.push(span);
        if self.runs.len() > self.options.max_runs {
            out.extend(self.close_least_recent(end));
        }
        out
    }

    /// A process below an agent ran a program: it joins the agent's run (see [`commands`]).
    /// Returns the spans this makes known (runs that went idle before it).
    pub fn command_started(&mut self, command: &Command) -> Vec<Span> {
        let out = self.close_idle(command.ts);
        self.commands
            .started(command, &mut self.runs, self.options.content);
        out
    }

    /// A command's process ended: the spans of the programs it ran.
    pub fn command_ended(&mut self, pid: u32, ts: u64, ending: Ending) -> Vec<Span> {
        self.commands.ended(pid, ts, ending, &mut self.runs)
    }

    /// An MCP request (`span`, see `crate::mcp`) made by process `pid`, a `tools/call` of
    /// `tool` with its arguments: it joins the process's run (see [`mcp`]). Returns it with its
    /// trace identity, after any spans this makes known.
    pub fn mcp_request(
        &mut self,
        pid: u32,
        tool: Option<(&str, &serde_json::Value)>,
        mut span: Span,
    ) -> Vec<Span> {
        let mut out = self.close_idle(span.start_time_unix_nano);
        mcp::place(&mut self.runs, pid, tool, &mut span);
        out.push(span);
        out
    }

    pub fn command_stats(&self) -> CommandStats {
        self.commands.stats
    }

    /// Spans of the runs idle since before `now` (Unix nanoseconds: event time, or the clock
    /// when no events come).
    pub fn close_idle(&mut self, now: u64) -> Vec<Span> {
        if now < self.last_sweep.saturating_add(SWEEP_INTERVAL_NS) {
            return Vec::new();
        }
        self.last_sweep = now;
        let idle = self.options.run_idle.as_nanos() as u64;
        self.close(
            |_, run| run.end.saturating_add(idle) <= now,
            CloseReason::Idle,
            now,
        )
    }

    /// Spans of the runs of a process that has exited at `now`.
    pub fn process_exited(&mut self, pid: u32, now: u64) -> Vec<Span> {
        self.threads.forget_process(pid);
        self.close(|_, run| run.site.pid == pid, CloseReason::ProcessExit, now)
    }

    /// Spans of every open run: the observer is stopping at `now`.
    pub fn finish(&mut self, now: u64) -> Vec<Span> {
        self.close(|_, _| true, CloseReason::ObserverStopped, now)
    }

    fn close_least_recent(&mut self, now: u64) -> Vec<Span> {
        let oldest = self.runs.iter().min_by_key(|(_, run)| run.end);
        let oldest = oldest.map(|(&id, _)| id);
        self.close(|id, _| Some(id) == oldest, CloseReason::TooManyRuns, now)
    }

    /// The spans of the runs `closing` picks, closed at `now` for `reason`: their roots, the
    /// tools seen under way that nothing answered, and their commands still running.
    fn close(
        &mut self,
        mut closing: impl FnMut(u64, &Run) -> bool,
        reason: CloseReason,
        now: u64,
    ) -> Vec<Span> {
        let ids: Vec<u64> = self
            .runs
            .iter()
            .filter(|&(&id, run)| closing(id, run))
            .map(|(&id, _)| id)
            .collect();
        let mut spans = Vec::new();
        for id in ids {
            spans.extend(self.commands.run_closed(id, now));
            if let Some(run) = self.runs.remove(&id) {
                spans.extend(run.close(reason, now));
            }
        }
        spans.sort_by_key(|span| span.start_time_unix_nano);
        spans
    }
}

fn new_trace_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>().max(1))
}

fn new_span_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>().max(1))
}
