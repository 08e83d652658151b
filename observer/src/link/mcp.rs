//! MCP requests in the agent's run: a `tools/call` under the `execute_tool` span of the tool call
//! it carries out (an open tool call of the run whose name ends with the MCP tool's name, as
//! agents prefix them (`mcp__server__tool`), and whose arguments are the request's), which
//! then spans the request; other requests (and tool calls no answer asked for) under the run's
//! root. A request of a process with no open run is the root of its own trace.
use std::collections::HashMap;

use serde_json::{Value, json};

use super::{REASON, new_span_id, new_trace_id, run::Run};
use crate::span::Span;

/// The reason on an MCP `tools/call` placed under the tool call it carries out.
pub const MCP_TOOL_CALL: &str = "mcp_tool_call";
/// The reason on other MCP requests placed in a run.
const AGENT_REQUEST: &str = "agent_request";

/// Places `span`, an MCP request made by process `pid` (a tool call of `tool`, with its
/// arguments, for `tools/call`).
pub(super) fn place(
    runs: &mut HashMap<u64, Run>,
    pid: u32,
    tool: Option<(&str, &Value)>,
    span: &mut Span,
) {
    span.span_id = new_span_id();
    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
    let agent_runs = || runs.iter().filter(|(_, run)| run.site.pid == pid);
    let asked = tool.and_then(|(name, arguments)| {
        agent_runs().find_map(|(&id, run)| {
            let found = run
                .find_tool(start, |asked, asked_arguments| {
                    names_tool(asked, name) && same_arguments(asked_arguments, arguments)
                })
                .or_else(|| run.find_tool(start, |asked, _| names_tool(asked, name)))?;
            Some((id, found))
        })
    });
    let run_id = asked.as_ref().map(|(id, _)| *id).or_else(|| {
        agent_runs()
            .max_by_key(|(_, run)| run.end)
            .map(|(&id, _)| id)
    });
    let Some(run) = run_id.and_then(|id| runs.get_mut(&id)) else {
        span.trace_id = new_trace_id();
        span.parent_span_id = None;
        return;
    };
    span.trace_id = run.trace_id.clone();
    run.actions += 1;
    run.extend(end);
    let tool_span = asked.and_then(|(_, call_id)| {
        let span_id = run.tool_started(&call_id, start, MCP_TOOL_CALL)?;
        run.tool_ended(&call_id, end);
        Some(span_id)
    });
    let reason = if tool_span.is_some() {
        MCP_TOOL_CALL
    } else {
        AGENT_REQUEST
    };
    span.parent_span_id = Some(tool_span.unwrap_or_else(|| run.root_span_id().to_owned()));
    span.attributes.insert(REASON.into(), json!(reason));
}

/// Whether the model's tool `asked` is the MCP tool `name`: the same, or prefixed by a server
/// name (`mcp__weather__lookup`, `weather_lookup`, `weather.lookup`).
fn names_tool(asked: &str, name: &str) -> bool {
    asked == name
        || asked
            .strip_suffix(name)
            .is_some_and(|prefix| prefix.ends_with(['_', '.', '-', '/']))
}

/// Whether the model's arguments (an object, or OpenAI's JSON text) are the request's.
fn same_arguments(asked: &Value, sent: &Value) -> bool {
    match asked {
        Value::String(text) => serde_json::from_str::<Value>(text).is_ok_and(|v| &v == sent),
        other => other == sent,
    }
}
