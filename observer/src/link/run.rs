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
/// The reason on a sub-agent's run started inside a tool call of its parent's (`Task`).
pub const SUB_AGENT_TOOL: &str = "sub_agent_tool";

/// Whether a tool's name says it runs an agent (Claude Code's `Task`, `Agent`; `run_agent`, …).
fn names_an_agent(name: &str) -> bool {
    name == "Task" || name.to_ascii_lowercase().contains("agent")
}

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
    arguments: Option<Value>,
    /// The end of the call that asked for it: the tool runs from then on.
    asked_at: u64,
    /// The start of that call: what carries the tool out starts after this.
    asked_after: u64,
    asked_by: String,
    /// What was seen carrying it out (a command, an MCP request), when something was.
    real: Option<RealTool>,
}

/// A tool execution seen happening: the span its processes or requests are children of.
struct RealTool {
    span_id: String,
    start: u64,
    end: u64,
    /// Its processes or requests still under way.
    running: u32,
    reason: &'static str,
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
    /// Commands and MCP requests placed in the run: a run of one call that did something is
    /// an agent too.
    pub actions: u64,
    /// For a sub-agent's run: the span it runs inside (another run's tool execution or
    /// command), and why.
    within: Option<Within>,
}

/// Where a sub-agent's run runs: a span of another run's, in that run's trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Within {
    pub trace_id: String,
    pub span_id: String,
    pub reason: &'static str,
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
            actions: 0,
            within: None,
        }
    }

    /// A sub-agent's run that `span` starts inside `within`: in that trace, its `invoke_agent`
    /// root a child of `within`'s span and parent of every call, the first one included.
    pub fn start_within(span: &mut Span, site: CallSite, within: Within) -> Run {
        let mut run = Run::start(span, site);
        run.trace_id = within.trace_id.clone();
        span.trace_id = within.trace_id.clone();
        span.parent_span_id = Some(run.root_span_id.clone());
        span.attributes.insert(REASON.into(), json!(within.reason));
        run.within = Some(within);
        run
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
    /// asked for earlier in the run. A tool seen carried out (a command, an MCP request) spans
    /// what was seen; otherwise the span is inferred, covering the time from that answer to
    /// this request.
    pub fn answer_tools(&mut self, keys: &LinkKeys, span: &Span) -> Vec<Span> {
        let mut tools = Vec::new();
        for id in &keys.tool_results {
            let Some(tool) = self.open_tools.remove(id) else {
                continue; // answered before (the history is sent again), or never seen asked
            };
            tools.push(self.tool_span(id, tool, span.start_time_unix_nano));
        }
        self.tool_order
            .retain(|id| self.open_tools.contains_key(id));
        tools
    }

    /// The `execute_tool` span of tool call `id`, answered (or the run closing) at `now`.
    fn tool_span(&self, id: &str, tool: OpenTool, now: u64) -> Span {
        let (span_id, start, end, reason) = match tool.real {
            Some(real) => {
                let end = if real.running > 0 { now } else { real.end };
                (real.span_id, real.start, end.max(real.start), real.reason)
            }
            None => (
                new_span_id(),
                tool.asked_at,
                now.max(tool.asked_at),
                Signal::ToolCall.as_str(),
            ),
        };
        let mut attributes = self.inherited.clone();
        attributes.insert(attr::OPENINFERENCE_SPAN_KIND.into(), json!("TOOL"));
        attributes.insert(attr::TOOL_CALL_ID.into(), json!(id));
        attributes.insert(attr::TOOL_TYPE.into(), json!("function"));
        if let Some(name) = &tool.name {
            attributes.insert(attr::TOOL_NAME.into(), json!(name));
        }
        attributes.insert(REASON.into(), json!(reason));
        Span {
            trace_id: self.trace_id.clone(),
            span_id,
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
        }
    }

    /// The open tool call that `matches` says was carried out by something that started at
    /// `start`: the latest asked, among those asked before it started.
    pub fn find_tool(&self, start: u64, matches: impl Fn(&str, &Value) -> bool) -> Option<String> {
        self.tool_order
            .iter()
            .rev()
            .filter_map(|id| Some((id, self.open_tools.get(id)?)))
            .find(|(_, tool)| {
                tool.asked_after <= start
                    && tool.arguments.as_ref().is_some_and(|arguments| {
                        matches(tool.name.as_deref().unwrap_or_default(), arguments)
                    })
            })
            .map(|(id, _)| id.clone())
    }

    /// Something that started at `start` carries out tool call `id` (see [`Run::find_tool`]):
    /// the span it is a child of.
    pub fn tool_started(&mut self, id: &str, start: u64, reason: &'static str) -> Option<String> {
        let tool = self.open_tools.get_mut(id)?;
        let real = tool.real.get_or_insert_with(|| RealTool {
            span_id: new_span_id(),
            start,
            end: start,
            running: 0,
            reason,
        });
        real.start = real.start.min(start);
        real.running += 1;
        Some(real.span_id.clone())
    }

    /// What carried out tool call `id` ended at `end`.
    pub fn tool_ended(&mut self, id: &str, end: u64) {
        if let Some(real) = self.open_tools.get_mut(id).and_then(|t| t.real.as_mut()) {
            real.end = real.end.max(end);
            real.running = real.running.saturating_sub(1);
        }
    }

    /// The span id of the run's `invoke_agent` root (written when the run closes).
    pub fn root_span_id(&self) -> &str {
        &self.root_span_id
    }

    /// The sub-agent tool call of this run that a new conversation starting at `start` in the
    /// same process carries out: an open call of a tool named for agents (`Task`, `Agent`,
    /// `…agent…`) asked before it began. Returns the span it runs inside.
    pub fn sub_agent_tool(&mut self, start: u64) -> Option<Within> {
        let id = self.find_tool(start, |name, _| names_an_agent(name))?;
        let span_id = self.tool_started(&id, start, SUB_AGENT_TOOL)?;
        Some(Within {
            trace_id: self.trace_id.clone(),
            span_id,
            reason: SUB_AGENT_TOOL,
        })
    }

    /// Something of the run's went on until `end`: the run is alive.
    pub fn extend(&mut self, end: u64) {
        self.end = self.end.max(end);
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
                arguments: call.arguments.clone(),
                asked_at: span.end_time_unix_nano,
                asked_after: span.start_time_unix_nano,
                asked_by: span.span_id.clone(),
                real: None,
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

    /// The spans a closing run writes: its `invoke_agent` root (none for a run of one call that
    /// did nothing else) and the tool executions seen under way that no request answered.
    pub fn close(mut self, reason: CloseReason, now: u64) -> Vec<Span> {
        let mut spans: Vec<Span> = self.root(reason).into_iter().collect();
        let unanswered: Vec<(String, OpenTool)> = self
            .open_tools
            .drain()
            .filter(|(_, tool)| tool.real.is_some())
            .collect();
        for (id, tool) in unanswered {
            let end = now.max(self.end);
            spans.push(self.tool_span(&id, tool, end));
        }
        spans
    }

    /// The run's `invoke_agent` root span, as of now; none for a run of one call that did
    /// nothing else. The first call was written as a root before anyone knew a run would
    /// follow: the agent's root shares its trace and links to it.
    fn root(&self, reason: CloseReason) -> Option<Span> {
        if self.calls < 2 && self.actions == 0 && self.within.is_none() {
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
        if let Some(within) = &self.within {
            attributes.insert(REASON.into(), json!(within.reason));
        }
        Some(Span {
            trace_id: self.trace_id.clone(),
            span_id: self.root_span_id.clone(),
            parent_span_id: self.within.as_ref().map(|within| within.span_id.clone()),
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
