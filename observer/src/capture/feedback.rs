//! What the pipeline tells the live capture: bytes it no longer needs, processes that make
//! LLM calls (followed whatever they cost), and answers about costly processes.
use std::collections::HashSet;

use super::{Feedback, Judgement, Unfollowed};

/// Processes remembered as LLM clients; past this, new ones are not told, and a costly one is
/// judged by its calls in flight alone.
const MAX_LLM_CLIENTS: usize = 65_536;

/// The way back to the capture; silent when there is none (a replay).
#[derive(Default)]
pub struct FeedbackChannel {
    hook: Option<Box<dyn FnMut(Feedback) + Send>>,
    /// Processes seen making LLM calls, each told once.
    llm_clients: HashSet<u32>,
}

impl FeedbackChannel {
    pub fn to(hook: Box<dyn FnMut(Feedback) + Send>) -> FeedbackChannel {
        FeedbackChannel {
            hook: Some(hook),
            llm_clients: HashSet::new(),
        }
    }

    fn tell(&mut self, feedback: Feedback) {
        if let Some(hook) = &mut self.hook {
            hook(feedback);
        }
    }

    pub fn unfollowed(&mut self, unfollowed: Unfollowed) {
        self.tell(Feedback::Unfollowed(unfollowed));
    }

    /// `pid` makes LLM calls (or MCP calls over HTTP): it sent one (at `since`, Unix ns), or
    /// one was recognised.
    pub fn llm_client(&mut self, pid: u32, since: u64) {
        if self.llm_clients.len() < MAX_LLM_CLIENTS && self.llm_clients.insert(pid) {
            self.tell(Feedback::LlmClient { pid, since });
        }
    }

    /// Answers the capture's question about a costly process: whether one of its calls is
    /// under way, and whether any of its traffic was seen at all.
    pub fn judged(&mut self, pid: u32, call_in_flight: bool, traffic_seen: bool) {
        let judgement = if call_in_flight || self.llm_clients.contains(&pid) {
            Judgement::Calls
        } else if traffic_seen {
            Judgement::NoCalls
        } else {
            Judgement::NothingSeen
        };
        self.tell(Feedback::Judged { pid, judgement });
    }

    pub fn process_ended(&mut self, pid: u32) {
        self.llm_clients.remove(&pid);
    }
}
