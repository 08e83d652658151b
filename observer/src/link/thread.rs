//! The weakest signal: calls one after another on the same thread and connection, close in
//! time. It only ever adds a span link: nothing in the calls themselves says they belong together.
use std::collections::HashMap;

use super::run::CallSite;
use crate::span::Span;

/// Threads remembered at most; forgotten all at once past this (only weak links are lost).
const MAX_THREADS: usize = 65_536;

#[derive(Default)]
pub(super) struct Threads {
    threads: HashMap<(u32, u32), ThreadState>,
}

struct ThreadState {
    last: LastCall,
    /// Until when calls on this thread were seen overlapping: a thread that multiplexes calls
    /// (an event loop) gives no order to rely on.
    busy_until: u64,
}

struct LastCall {
    trace_id: String,
    span_id: String,
    conn: u64,
    start: u64,
    end: u64,
}

impl Threads {
    /// The call on the same thread that `span` may follow: the thread's last call, on the same
    /// connection, ended before `span` began and at most `gap` before, with no overlapping
    /// calls on the thread in that time. Returns its trace and span ids.
    pub fn predecessor(&self, site: CallSite, span: &Span, gap: u64) -> Option<(&str, &str)> {
        let state = self.threads.get(&(site.pid, site.tid))?;
        let last = &state.last;
        let start = span.start_time_unix_nano;
        let sequential = last.end <= start && start - last.end <= gap;
        let quiet = state.busy_until.saturating_add(gap) <= start;
        (sequential && quiet && last.conn == site.conn)
            .then_some((last.trace_id.as_str(), last.span_id.as_str()))
    }

    /// Notes `span`, just linked, as a call on its thread.
    pub fn record(&mut self, site: CallSite, span: &Span) {
        if self.threads.len() >= MAX_THREADS {
            self.threads.clear();
        }
        let call = LastCall {
            trace_id: span.trace_id.clone(),
            span_id: span.span_id.clone(),
            conn: site.conn,
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano,
        };
        match self.threads.get_mut(&(site.pid, site.tid)) {
            None => {
                let state = ThreadState {
                    last: call,
                    busy_until: 0,
                };
                self.threads.insert((site.pid, site.tid), state);
            }
            Some(state) => {
                if call.start < state.last.end && state.last.start < call.end {
                    state.busy_until = state.busy_until.max(call.end).max(state.last.end);
                }
                if call.end >= state.last.end {
                    state.last = call;
                }
            }
        }
    }

    pub fn forget_process(&mut self, pid: u32) {
        self.threads.retain(|(p, _), _| *p != pid);
    }
}
