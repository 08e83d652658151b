//! An agent run: the calls one process makes in one conversation, in one trace, with the tool
//! executions inferred between them.
//!
//! A call alone is not an agent: the first call of a run is written as the root of its own
//! trace, and a run that stays at one call adds no span (a host of single-call scripts does
//! not double its span count). Once a second call joins, the run is an agent: the later calls
//! and the tools are children of an `invoke_agent` root in the same trace, which links to the
//! first call (reason `first_call`); the first call stays a root, as it was written before
//! anyone knew a run would follow.
//!
//! The root's end is only known once the run is over, so the root span is written once, when
//! the run closes: after `run_idle` without a call, when its process exits, when the observer
//! stops, or when too many runs are open. Until then the calls already written name it as their
//! parent (viewers show them as orphans for that while).
use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};

use super::{REASON, Signal, new_span_id, new_trace_id};
use crate::{
    llm::{LinkKeys, attr},
    span::{GenAi, Span, SpanKind, SpanLink},
};

/// The reason on the agent root's link to its run's first call.
const FIRST_CALL: &str = "first_call";

/// Response ids and unanswered tool calls remembered per run, the oldest forgotten past these.
const MAX_RESPONSE_IDS: usize = 256;
const MAX_OPEN_TOOLS: usize = 256;

/// Attributes a run's spans take from its first call (with its provider).
const INHERITED: &[&str] = &[
    attr::PROCESS_PID,
    attr::PROCESS_EXECUTABLE_NAME,
    attr::PROCESS_EXECUTABLE_PATH,
];

/// Where a call ran: its process, thread and connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSite {
    pub pid: u32,
    pub tid: u32,
    pub conn: u64,
}

/// The conversation as of a run's last call: what it sent and what came back.
pub(super) struct Frontier {
    pub input: Vec<u64>,
    pub output: Vec<u64>,
    pub span_id: String,
    pub end: u64,
}

struct OpenTool {
    name: Option<String>,
    /// The end of the call that asked for it: the tool runs from then on.
    asked_at: u64,
    asked_by: String,
}

pub(super) struct Run {
    pub site: CallSite,
    pub trace_id: String,
    root_span_id: String,
    start: u64,
    /// The end of its latest span: the run's last sign of life.
    pub end: u64,
    /// The span id of the run's first call, a root of its own.
    first_call: String,
    calls: u64,
    provider: Option<String>,
    inherited: Map<String, Value>,
    pub conversation_id: Option<String>,
    pub frontier: Option<Frontier>,
    /// Response id → the span of the call that got it.
    pub response_ids: HashMap<String, String>,
    response_order: VecDeque<String>,
    open_tools: HashMap<String, OpenTool>,
    tool_order: VecDeque<String>,
}

/// Why a run's root is written now.
#[derive(Clone, Copy, Debug)]
pub(super) enum CloseReason {
    Idle,
    ProcessExit,
    ObserverStopped,
    TooManyRuns,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::ProcessExit => "process_exit",
            CloseReason::ObserverStopped => "observer_stopped",
            CloseReason::TooManyRuns => "too_many_runs",
        }
    }
}

impl Run {
    /// A run that `span` starts. Alone, a call is no agent: it is the root of its own trace
    /// until a second call joins the run (see [`Run::root`]).
    pub fn start(span: &mut Span, site: CallSite) -> Run {
        span.trace_id = new_trace_id();
        span.parent_span_id = None;
        Run {
            site,
            trace_id: span.trace_id.clone(),
            root_span_id: new_span_id(),
            first_call: span.span_id.clone(),
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano,
            calls: 1,
            provider: span.gen_ai.provider.clone(),
            inherited: INHERITED
                .iter()
                .filter_map(|key| Some((key.to_string(), span.attribute(key)?.clone())))
                .collect(),
            conversation_id: None,
            frontier: None,
            response_ids: HashMap::new(),
            response_order: VecDeque::new(),
            open_tools: HashMap::new(),
            tool_order: VecDeque::new(),
        }
    }

    /// Makes `span` a child of the run's root, continuing the call `predecessor` because of `signal`.
    pub fn join(&mut self, span: &mut Span, signal: Signal, predecessor: &str) {
        span.trace_id = self.trace_id.clone();
        span.parent_span_id = Some(self.root_span_id.clone());
        self.calls += 1;
        span.attributes
            .insert(REASON.into(), json!(signal.as_str()));
        span.links
            .push(link(&self.trace_id, predecessor, signal.as_str()));
    }

    /// The tool executions `span`'s request answers: one `execute_tool` span per tool call
    /// asked for earlier in the run, covering the time from that answer to this request.
    pub fn answer_tools(&mut self, keys: &LinkKeys, span: &Span) -> Vec<Span> {
        let mut tools = Vec::new();
        for id in &keys.tool_results {
            let Some(tool) = self.open_tools.remove(id) else {
                continue; // answered before (the history is sent again), or never seen asked
            };
            let start = tool.asked_at;
            let end = span.start_time_unix_nano.max(start);
            let mut attributes = self.inherited.clone();
            attributes.insert(attr::OPENINFERENCE_SPAN_KIND.into(), json!("TOOL"));
            attributes.insert(attr::TOOL_CALL_ID.into(), json!(id));
            attributes.insert(attr::TOOL_TYPE.into(), json!("function"));
            if let Some(name) = &tool.name {
                attributes.insert(attr::TOOL_NAME.into(), json!(name));
            }
            attributes.insert(REASON.into(), json!(Signal::ToolCall.as_str()));
            tools.push(Span {
                trace_id: self.trace_id.clone(),
                span_id: new_span_id(),
                parent_span_id: Some(self.root_span_id.clone()),
                name: match &tool.name {
                    Some(name) => format!("execute_tool {name}"),
                    None => "execute_tool".into(),
                },
                kind: SpanKind::Internal,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                gen_ai: self.gen_ai("execute_tool"),
                attributes,
                links: vec![link(
                    &self.trace_id,
                    &tool.asked_by,
                    Signal::ToolCall.as_str(),
                )],
            });
        }
        self.tool_order
            .retain(|id| self.open_tools.contains_key(id));
        tools
    }

    /// Remembers what `span`'s call tells about the conversation, for the calls after it.
    pub fn record(&mut self, keys: &LinkKeys, span: &Span) {
        self.start = self.start.min(span.start_time_unix_nano);
        self.end = self.end.max(span.end_time_unix_nano);
        if self.conversation_id.is_none() {
            self.conversation_id = keys.conversation_id.clone();
        }
        if let Some(id) = &keys.response_id {
            bounded_insert(
                &mut self.response_ids,
                &mut self.response_order,
                MAX_RESPONSE_IDS,
                id.clone(),
                span.span_id.clone(),
            );
        }
        for call in &keys.tool_calls {
            let tool = OpenTool {
                name: call.name.clone(),
                asked_at: span.end_time_unix_nano,
                asked_by: span.span_id.clone(),
            };
            bounded_insert(
                &mut self.open_tools,
                &mut self.tool_order,
                MAX_OPEN_TOOLS,
                call.id.clone(),
                tool,
            );
        }
        self.frontier = Some(Frontier {
            input: keys.input.clone(),
            output: keys.output.clone(),
            span_id: span.span_id.clone(),
            end: span.end_time_unix_nano,
        });
    }

    /// When the tool call `id` was asked for, if it is still unanswered.
    pub fn open_tool_asked_at(&self, id: &str) -> Option<u64> {
        self.open_tools.get(id).map(|tool| tool.asked_at)
    }

    /// The run's `invoke_agent` root span, as of now; none for a run of one call. The first call
    /// was written as a root before anyone knew a run would follow: the agent's root shares its
    /// trace and links to it.
    pub fn root(&self, reason: CloseReason) -> Option<Span> {
        if self.calls < 2 {
            return None;
        }
        let mut attributes = self.inherited.clone();
        attributes.insert(attr::OPENINFERENCE_SPAN_KIND.into(), json!("AGENT"));
        if let Some(id) = &self.conversation_id {
            attributes.insert(attr::CONVERSATION_ID.into(), json!(id));
        }
        attributes.insert(attr::OBSERVER_RUN_CALLS.into(), json!(self.calls));
        attributes.insert(
            attr::OBSERVER_RUN_CLOSE_REASON.into(),
            json!(reason.as_str()),
        );
        Some(Span {
            trace_id: self.trace_id.clone(),
            span_id: self.root_span_id.clone(),
            parent_span_id: None,
            name: "invoke_agent".into(),
            kind: SpanKind::Internal,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            gen_ai: self.gen_ai("invoke_agent"),
            attributes,
            links: vec![link(&self.trace_id, &self.first_call, FIRST_CALL)],
        })
    }
}

impl Run {
    /// The typed facts of a span the run infers: its operation, and the run's provider.
    fn gen_ai(&self, operation: &str) -> GenAi {
        GenAi {
            provider: self.provider.clone(),
            operation: Some(operation.to_owned()),
            ..GenAi::default()
        }
    }
}

pub(super) fn link(trace_id: &str, span_id: &str, reason: &str) -> SpanLink {
    let mut attributes = Map::new();
    attributes.insert(REASON.into(), json!(reason));
    SpanLink {
        trace_id: trace_id.to_owned(),
        span_id: span_id.to_owned(),
        attributes,
    }
}

/// Inserts into a map that forgets its oldest key past `max`.
fn bounded_insert<V>(
    map: &mut HashMap<String, V>,
    order: &mut VecDeque<String>,
    max: usize,
    key: String,
    value: V,
) {
    if map.insert(key.clone(), value).is_none() {
        order.push_back(key);
    }
    while order.len() > max {
        if let Some(oldest) = order.pop_front() {
            map.remove(&oldest);
        }
    }
}
