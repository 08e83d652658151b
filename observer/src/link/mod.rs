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
//!    not an agent: the `invoke_agent` root exists only once a second call joins). If it is
//!    not a fresh conversation and follows
//!    another call on the same thread and connection within `thread_gap`, it carries a span
//!    link to that call, reason `same_thread` ([`thread`]): a hint, not a parent.
//!
//! Concurrent calls stay apart: content only continues a call that had ended before the
//! request began, and the same-thread hint needs calls that do not overlap.
mod conversation;
mod run;
mod thread;
mod traceparent;

#[cfg(test)]
mod tests;

use std::{collections::HashMap, time::Duration};

use rand::Rng;
use serde_json::json;

pub use self::run::CallSite;
use self::{
    run::{CloseReason, Run},
    thread::Threads,
};
use crate::{llm::LinkKeys, span::Span};

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
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            run_idle: Duration::from_secs(300),
            thread_gap: Duration::from_secs(30),
            max_runs: 10_000,
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
                    let run = Run::start(&mut span, site);
                    span.links.extend(hint);
                    self.next_run += 1;
                    self.runs.entry(self.next_run).or_insert(run)
                }
            };
            run.record(keys, &span);
        }
        self.threads.record(site, &span);
        out.push(span);
        if self.runs.len() > self.options.max_runs {
            out.extend(self.close_least_recent());
        }
        out
    }

    /// Roots of the runs idle since before `now` (Unix nanoseconds: event time, or the clock
    /// when no events come).
    pub fn close_idle(&mut self, now: u64) -> Vec<Span> {
        if now < self.last_sweep.saturating_add(SWEEP_INTERVAL_NS) {
            return Vec::new();
        }
        self.last_sweep = now;
        let idle = self.options.run_idle.as_nanos() as u64;
        self.close(|run| run.end.saturating_add(idle) <= now, CloseReason::Idle)
    }

    /// Roots of the runs of a process that has exited.
    pub fn process_exited(&mut self, pid: u32) -> Vec<Span> {
        self.threads.forget_process(pid);
        self.close(|run| run.site.pid == pid, CloseReason::ProcessExit)
    }

    /// Roots of every open run: the observer is stopping.
    pub fn finish(&mut self) -> Vec<Span> {
        self.close(|_| true, CloseReason::ObserverStopped)
    }

    fn close_least_recent(&mut self) -> Vec<Span> {
        let oldest = self.runs.iter().min_by_key(|(_, run)| run.end);
        let oldest = oldest.map(|(&id, _)| id);
        oldest
            .and_then(|id| self.runs.remove(&id))
            .and_then(|run| run.root(CloseReason::TooManyRuns))
            .into_iter()
            .collect()
    }

    fn close(&mut self, mut closing: impl FnMut(&Run) -> bool, reason: CloseReason) -> Vec<Span> {
        let mut roots = Vec::new();
        self.runs.retain(|_, run| {
            let close = closing(run);
            if close {
                roots.extend(run.root(reason));
            }
            !close
        });
        roots.sort_by_key(|root| root.start_time_unix_nano);
        roots
    }
}

fn new_trace_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>().max(1))
}

fn new_span_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>().max(1))
}
