//! Linking end to end: agent-shaped call sequences from the real SDKs (tests/clients/
//! linking_calls.py) under `observer capture`, checked against how the clients grouped them.
use std::collections::{BTreeMap, HashSet};

use observer_e2e::{ClientCall, ObserverRun, Span, TestEnv};

/// Runs the linking client's `scenario` under the observer; checks every call has its span.
fn run(scenario: &str) -> (ObserverRun, Linked) {
    let env = TestEnv::new();
    let run = env.capture(&env.client("linking_calls.py", &[scenario]), false);
    assert!(
        !run.calls.is_empty(),
        "the client reported no calls:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let linked = Linked::new(&run);
    (run, linked)
}

/// The observer's spans seen through the client's calls.
struct Linked {
    spans: Vec<Span>,
    /// Per conversation (as the client grouped its calls), each turn's span, in turn order.
    conversations: BTreeMap<String, Vec<Span>>,
}

impl Linked {
    fn new(run: &ObserverRun) -> Linked {
        let mut conversations: BTreeMap<String, Vec<(u64, Span)>> = BTreeMap::new();
        for call in &run.calls {
            let id = call
                .response_id()
                .expect("every linking call has a response id");
            let matching: Vec<&Span> = run
                .spans
                .iter()
                .filter(|s| s.str("gen_ai.response.id") == Some(id))
                .collect();
            let [span] = matching.as_slice() else {
                panic!(
                    "call {} (response {id}): expected one span, got {}\n{}",
                    call.0,
                    matching.len(),
                    dump(&run.spans)
                );
            };
            conversations
                .entry(field(call, "conversation"))
                .or_default()
                .push((call.0["turn"].as_u64().unwrap_or(0), (*span).clone()));
        }
        Linked {
            spans: run.spans.clone(),
            conversations: conversations
                .into_iter()
                .map(|(k, mut turns)| {
                    turns.sort_by_key(|(turn, _)| *turn);
                    (k, turns.into_iter().map(|(_, span)| span).collect())
                })
                .collect(),
        }
    }

    fn span(&self, id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.str("span_id") == Some(id))
    }

    fn in_trace(&self, trace: &str) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.str("trace_id") == Some(trace))
            .collect()
    }

    /// Asserts that each conversation is exactly one trace holding its calls and nothing of
    /// any other conversation: its first call a root, the later ones under one `invoke_agent`
    /// root that links to the first (a lone call has no such root); returns the traces.
    fn assert_one_run_per_conversation(&self) -> Vec<String> {
        let mut traces = Vec::new();
        for (conversation, turns) in &self.conversations {
            let trace = turns[0].str("trace_id").expect("trace id").to_owned();
            assert_eq!(
                turns[0].get("parent_span_id"),
                None,
                "{conversation}: the first call is a root\n{}",
                dump(&self.spans)
            );
            let agents = self
                .in_trace(&trace)
                .into_iter()
                .filter(|s| s.str("gen_ai.operation.name") == Some("invoke_agent"))
                .count();
            let Some(second) = turns.get(1) else {
                assert_eq!(agents, 0, "{conversation}: a lone call is no agent");
                traces.push(trace);
                continue;
            };
            assert_eq!(agents, 1, "{conversation}: one agent root");
            let root_id = second.str("parent_span_id").unwrap_or_else(|| {
                panic!(
                    "{conversation}: second call has no parent\n{}",
                    dump(&self.spans)
                )
            });
            for (i, span) in turns.iter().enumerate().skip(1) {
                assert_eq!(
                    (span.str("trace_id"), span.str("parent_span_id")),
                    (Some(trace.as_str()), Some(root_id)),
                    "{conversation} turn {}: not in the first turn's run\n{}",
                    i + 1,
                    dump(&self.spans)
                );
            }
            let root = self
                .span(root_id)
                .unwrap_or_else(|| panic!("{conversation}: root {root_id} never written"));
            assert_eq!(root.str("gen_ai.operation.name"), Some("invoke_agent"));
            assert_eq!(root.str("kind"), Some("INTERNAL"));
            assert_eq!(root.get("parent_span_id"), None);
            assert_eq!(root.u64("observer.run.calls"), Some(turns.len() as u64));
            let first_call = root.get("links").and_then(|links| links.get(0));
            assert_eq!(
                first_call.and_then(|link| link.get("span_id")),
                turns[0].get("span_id"),
                "{conversation}: the root links to the first call"
            );
            let calls_in_trace: Vec<&Span> = self
                .in_trace(&trace)
                .into_iter()
                .filter(|s| s.is_call())
                .collect();
            assert_eq!(
                calls_in_trace.len(),
                turns.len(),
                "{conversation}: its trace holds other calls too\n{}",
                dump(&self.spans)
            );
            traces.push(trace);
        }
        let distinct: HashSet<&String> = traces.iter().collect();
        assert_eq!(distinct.len(), traces.len(), "conversations share a trace");
        traces
    }

    /// Asserts no span links one conversation's trace to another's.
    fn assert_no_cross_links(&self) {
        for span in &self.spans {
            for link in span
                .get("links")
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
            {
                assert_eq!(
                    link["trace_id"].as_str(),
                    span.str("trace_id"),
                    "a link across conversations: {span}"
                );
            }
        }
    }
}

fn field(call: &ClientCall, key: &str) -> String {
    call.0[key].as_str().unwrap_or_default().to_owned()
}

fn dump(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} trace={} span={} parent={:?} reason={:?} links={}",
                s.str("name").unwrap_or("?"),
                s.str("trace_id").unwrap_or("?"),
                s.str("span_id").unwrap_or("?"),
                s.str("parent_span_id"),
                s.str("observer.link.reason"),
                s.get("links").map_or("[]".into(), |l| l.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn reasons(turns: &[Span]) -> Vec<Option<&str>> {
    turns
        .iter()
        .map(|s| s.str("observer.link.reason"))
        .collect()
}

/// Four chat turns, each carrying the history: one trace, one root, linked turn to turn.
#[test]
fn openai_four_turn_conversation_is_one_run() {
    let (_, linked) = run("conversation");
    linked.assert_one_run_per_conversation();
    let turns = linked.conversations.values().next().unwrap();
    assert_eq!(turns.len(), 4);
    assert_eq!(
        reasons(turns),
        [
            None,
            Some("conversation_prefix"),
            Some("conversation_prefix"),
            Some("conversation_prefix")
        ]
    );
    for pair in turns.windows(2) {
        let link = &pair[1].get("links").expect("a link to the turn before")[0];
        assert_eq!(link["span_id"].as_str(), pair[0].str("span_id"));
    }
}

/// Anthropic Messages, JSON and streamed turns, with a system prompt (and its cache marker)
/// changing every turn: still one conversation.
#[test]
fn anthropic_four_turn_conversation_with_changing_system_prompt_is_one_run() {
    let (_, linked) = run("anthropic_conversation");
    linked.assert_one_run_per_conversation();
    assert_eq!(linked.conversations.values().next().unwrap().len(), 4);
}

/// The model asks for a tool; its answer comes back in the next request: one run, and an
/// `execute_tool` span between the two calls.
#[test]
fn tool_round_trip_has_an_execute_tool_span() {
    let (run, linked) = run("tool_round_trip");
    linked.assert_one_run_per_conversation();
    let turns = linked.conversations.values().next().unwrap();
    let asked = &run.calls[0].tool_calls()[0];
    let tools: Vec<&Span> = linked
        .in_trace(turns[0].str("trace_id").unwrap())
        .into_iter()
        .filter(|s| s.str("gen_ai.operation.name") == Some("execute_tool"))
        .collect();
    let [tool] = tools.as_slice() else {
        panic!("one execute_tool span expected\n{}", dump(&linked.spans))
    };
    assert_eq!(tool.str("name"), Some("execute_tool get_weather"));
    assert_eq!(tool.str("gen_ai.tool.name"), Some("get_weather"));
    assert_eq!(tool.str("gen_ai.tool.call.id"), asked["id"].as_str());
    assert_eq!(tool.str("parent_span_id"), turns[1].str("parent_span_id"));
    let time = |s: &Span, k: &str| s.u64(k).unwrap();
    assert_eq!(
        time(tool, "start_time_unix_nano"),
        time(&turns[0], "end_time_unix_nano")
    );
    assert_eq!(
        time(tool, "end_time_unix_nano"),
        time(&turns[1], "start_time_unix_nano")
    );
    // The client's tool took 300 ms.
    assert!(time(tool, "end_time_unix_nano") - time(tool, "start_time_unix_nano") >= 300_000_000);
}

/// A request carrying W3C trace context joins the caller's trace under the caller's span.
#[test]
fn traceparent_joins_the_callers_trace() {
    let (run, linked) = run("traceparent");
    let call = &run.calls[0];
    let span = &linked.conversations.values().next().unwrap()[0];
    assert_eq!(span.str("trace_id"), Some(field(call, "trace_id").as_str()));
    assert_eq!(
        span.str("parent_span_id"),
        Some(field(call, "parent_span_id").as_str())
    );
    assert_eq!(span.str("observer.link.reason"), Some("traceparent"));
    assert_eq!(
        linked.in_trace(&field(call, "trace_id")).len(),
        1,
        "no root of ours"
    );
}

/// The Responses API with server-side state: each request names the previous response only.
#[test]
fn responses_previous_response_id_chain_is_one_run() {
    let (_, linked) = run("responses_chain");
    linked.assert_one_run_per_conversation();
    let turns = linked.conversations.values().next().unwrap();
    assert_eq!(
        reasons(turns),
        [
            None,
            Some("previous_response_id"),
            Some("previous_response_id")
        ]
    );
}

/// Eight threads running the same two-turn conversation at once: eight runs, each with its
/// own thread's calls.
#[test]
fn eight_threads_stay_separate() {
    let (run, linked) = run("threads8");
    assert_eq!(linked.conversations.len(), 8);
    linked.assert_one_run_per_conversation();
    linked.assert_no_cross_links();
    for call in &run.calls {
        let span = linked
            .spans
            .iter()
            .find(|s| s.str("gen_ai.response.id") == call.response_id())
            .unwrap();
        assert_eq!(span.u64("thread.id"), Some(call.tid()));
    }
}

/// Twenty two-turn streamed conversations interleaved on one event-loop thread, each on its
/// own connection: twenty runs, no call in another's.
#[test]
fn twenty_concurrent_streams_on_one_thread_stay_separate() {
    let (run, linked) = run("async20");
    let threads: HashSet<u64> = run.calls.iter().map(ClientCall::tid).collect();
    assert_eq!(threads.len(), 1, "the client ran on one thread");
    assert_eq!(linked.conversations.len(), 20);
    linked.assert_one_run_per_conversation();
    linked.assert_no_cross_links();
}
