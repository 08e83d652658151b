//! Every linking rule, and the mistakes it must not make.
use serde_json::{Value, json};

use super::*;
use crate::capture::{Command, Ending};
use crate::llm::content::ContentMode;
use crate::{
    http::Headers,
    llm::{LlmCall, attr, keys},
    span::GenAi,
    span::SpanKind,
};

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"type": "text", "content": text}]})
}

fn system(text: &str) -> Value {
    json!({"role": "system", "parts": [{"type": "text", "content": text}]})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"})
}

fn asks_tool(id: &str, name: &str) -> Value {
    json!({"role": "assistant", "finish_reason": "tool_call", "parts": [
        {"type": "tool_call", "id": id, "name": name, "arguments": {"city": "Paris"}}]})
}

fn tool_result(id: &str) -> Value {
    json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": id, "response": "18C"}]})
}

/// One call as the link stage receives it.
#[derive(Clone)]
struct Call {
    pid: u32,
    tid: u32,
    conn: u64,
    start: u64,
    end: u64,
    input: Vec<Value>,
    output: Vec<Value>,
    headers: Vec<(String, String)>,
    response_id: Option<String>,
    previous_response_id: Option<String>,
}

impl Call {
    fn new(start_ms: u64, input: Vec<Value>, output: Vec<Value>) -> Call {
        Call {
            pid: 100,
            tid: 100,
            conn: 1,
            start: 1_000 * SECOND + start_ms * MS,
            end: 1_000 * SECOND + (start_ms + 100) * MS,
            input,
            output,
            headers: Vec::new(),
            response_id: None,
            previous_response_id: None,
        }
    }

    fn on(mut self, pid: u32, tid: u32, conn: u64) -> Call {
        (self.pid, self.tid, self.conn) = (pid, tid, conn);
        self
    }

    fn lasting(mut self, ms: u64) -> Call {
        self.end = self.start + ms * MS;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn response(mut self, id: &str) -> Call {
        self.response_id = Some(id.into());
        self
    }

    fn previous(mut self, id: &str) -> Call {
        self.previous_response_id = Some(id.into());
        self
    }
}

/// Links one call: the spans written (the call's last).
fn link(linker: &mut Linker, call: &Call) -> Vec<Span> {
    let headers = Headers(call.headers.clone());
    let mut llm_call = LlmCall::new("openai", "chat");
    llm_call.set(attr::INPUT_MESSAGES, call.input.clone());
    llm_call.set(attr::OUTPUT_MESSAGES, call.output.clone());
    if let Some(id) = &call.response_id {
        llm_call.set(attr::RESPONSE_ID, id.as_str());
    }
    llm_call.link.previous_response_id = call.previous_response_id.clone();
    let keys = keys::read(&mut llm_call, &headers);
    let mut attributes = llm_call.attributes.clone();
    attributes.insert("process.pid".into(), json!(call.pid));
    let span = Span {
        trace_id: String::new(),
        span_id: String::new(),
        parent_span_id: None,
        name: "chat m".into(),
        kind: SpanKind::Client,
        start_time_unix_nano: call.start,
        end_time_unix_nano: call.end,
        gen_ai: GenAi::take_from(&mut attributes),
        attributes,
        links: Vec::new(),
    };
    let site = CallSite {
        pid: call.pid,
        tid: call.tid,
        conn: call.conn,
    };
    linker.link(site, &keys, span)
}

/// Links calls in order, returning each call's span.
fn link_all(linker: &mut Linker, calls: &[Call]) -> Vec<Span> {
    calls
        .iter()
        .map(|call| link(linker, call).pop().unwrap())
        .collect()
}

fn reason(span: &Span) -> Option<&str> {
    span.attribute(REASON).and_then(Value::as_str)
}

fn link_reasons(span: &Span) -> Vec<&str> {
    span.links
        .iter()
        .filter_map(|l| l.attributes.get(REASON)?.as_str())
        .collect()
}

fn roots(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.gen_ai.operation.as_deref() == Some("invoke_agent"))
        .collect()
}

/// A four-turn conversation, each turn sending the history and the last answer.
fn four_turns(start_ms: u64, topic: &str) -> Vec<Call> {
    let mut history = vec![user(&format!("{topic} 1"))];
    let mut calls = Vec::new();
    for turn in 1..=4 {
        let answer = assistant(&format!("answer {turn} about {topic}"));
        calls.push(Call::new(
            start_ms + turn * 1_000,
            history.clone(),
            vec![answer.clone()],
        ));
        history.push(answer);
        history.push(user(&format!("{topic} {}", turn + 1)));
    }
    calls
}

#[test]
fn a_conversation_is_one_run_under_one_root() {
    let mut linker = Linker::default();
    let spans = link_all(&mut linker, &four_turns(0, "weather"));
    let trace = &spans[0].trace_id;
    assert_eq!(spans[0].parent_span_id, None, "the first call is a root");
    let root_id = spans[1]
        .parent_span_id
        .clone()
        .expect("a joining call has the run's root as parent");
    for (turn, span) in spans.iter().enumerate().skip(1) {
        assert_eq!(&span.trace_id, trace, "turn {turn}");
        assert_eq!(span.parent_span_id.as_ref(), Some(&root_id), "turn {turn}");
    }
    assert_eq!(reason(&spans[0]), None);
    for (turn, span) in spans.iter().enumerate().skip(1) {
        assert_eq!(reason(span), Some("conversation_prefix"));
        assert_eq!(span.links.len(), 1);
        assert_eq!(
            span.links[0].span_id,
            spans[turn - 1].span_id,
            "links the turn before"
        );
    }
    let finished = linker.finish(u64::MAX / 2);
    let [root] = roots(&finished)[..] else {
        panic!("one root expected: {finished:?}")
    };
    assert_eq!(root.span_id, root_id);
    assert_eq!(root.trace_id, *trace);
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, SpanKind::Internal);
    assert_eq!(root.start_time_unix_nano, spans[0].start_time_unix_nano);
    assert_eq!(root.end_time_unix_nano, spans[3].end_time_unix_nano);
    assert_eq!(root.attribute("observer.run.calls"), Some(&json!(4)));
    let [first_call] = &root.links[..] else {
        panic!("the root links to the first call: {root:?}")
    };
    assert_eq!(first_call.span_id, spans[0].span_id);
    assert_eq!(
        first_call.attributes.get(REASON),
        Some(&json!("first_call"))
    );
    assert_eq!(
        root.attribute("openinference.span.kind"),
        Some(&json!("AGENT"))
    );
    assert_eq!(root.attribute("process.pid"), Some(&json!(100)));
}

#[test]
fn a_changed_system_prompt_and_another_thread_keep_the_conversation() {
    let mut linker = Linker::default();
    let first = Call::new(0, vec![system("v1"), user("hi")], vec![assistant("hello")]);
    let second = Call::new(
        1_000,
        vec![system("v2"), user("hi"), assistant("hello"), user("more")],
        vec![assistant("sure")],
    )
    .on(100, 101, 2);
    let spans = link_all(&mut linker, &[first, second]);
    assert_eq!(spans[0].trace_id, spans[1].trace_id);
    assert_eq!(reason(&spans[1]), Some("conversation_prefix"));
}

#[test]
fn a_history_cut_short_still_carries_the_last_answer() {
    let mut linker = Linker::default();
    let first = Call::new(
        0,
        vec![user("a"), assistant("b"), user("c")],
        vec![assistant("d")],
    );
    // A sliding window dropped the first exchange.
    let second = Call::new(1_000, vec![user("c"), assistant("d"), user("e")], vec![]);
    let spans = link_all(&mut linker, &[first, second]);
    assert_eq!(spans[0].trace_id, spans[1].trace_id);
    assert_eq!(reason(&spans[1]), Some("conversation_overlap"));
}

#[test]
fn previous_response_id_links_even_a_lone_message_on_another_thread() {
    let mut linker = Linker::default();
    let first = Call::new(0, vec![user("hi")], vec![assistant("hello")]).response("resp_1");
    let second = Call::new(1_000, vec![user("and then?")], vec![assistant("x")])
        .previous("resp_1")
        .on(100, 7, 9);
    let spans = link_all(&mut linker, &[first, second]);
    assert_eq!(spans[0].trace_id, spans[1].trace_id);
    assert_eq!(reason(&spans[1]), Some("previous_response_id"));
    assert_eq!(spans[1].links[0].span_id, spans[0].span_id);
}

#[test]
fn an_explicit_session_id_links_and_another_one_does_not() {
    let mut linker = Linker::default();
    let a1 = Call::new(0, vec![user("one")], vec![assistant("1")]).header("x-session-id", "s-a");
    let a2 = Call::new(1_000, vec![user("two")], vec![assistant("2")])
        .header("X-Session-Id", "s-a")
        .on(100, 5, 5);
    let b1 = Call::new(2_000, vec![user("three")], vec![]).header("x-session-id", "s-b");
    let spans = link_all(&mut linker, &[a1, a2, b1]);
    assert_eq!(spans[0].trace_id, spans[1].trace_id);
    assert_eq!(reason(&spans[1]), Some("conversation_id"));
    assert_ne!(spans[2].trace_id, spans[0].trace_id);
    let roots = linker.finish(u64::MAX / 2);
    assert_eq!(
        roots[0].attribute(attr::CONVERSATION_ID),
        Some(&json!("s-a"))
    );
}

#[test]
fn a_tool_round_trip_gets_an_execute_tool_span_covering_the_gap() {
    let mut linker = Linker::default();
    let ask = Call::new(
        0,
        vec![user("weather in Paris?")],
        vec![asks_tool("call_1", "get_weather")],
    );
    let history = vec![
        user("weather in Paris?"),
        asks_tool("call_1", "get_weather"),
        tool_result("call_1"),
    ];
    let answer = Call::new(2_000, history.clone(), vec![assistant("18C in Paris")]);
    let mut later_history = history;
    later_history.extend([assistant("18C in Paris"), user("thanks")]);
    let later = Call::new(5_000, later_history, vec![assistant("welcome")]);

    let first = link(&mut linker, &ask).pop().unwrap();
    let mut written = link(&mut linker, &answer);
    let second = written.pop().unwrap();
    let [tool] = written.as_slice() else {
        panic!("one execute_tool span expected: {written:?}")
    };
    assert_eq!(tool.name, "execute_tool get_weather");
    assert_eq!(
        tool.attribute("openinference.span.kind"),
        Some(&json!("TOOL"))
    );
    assert_eq!(tool.kind, SpanKind::Internal);
    assert_eq!(tool.trace_id, first.trace_id);
    assert_eq!(tool.parent_span_id, second.parent_span_id);
    assert_eq!(
        tool.attribute("gen_ai.tool.call.id"),
        Some(&json!("call_1"))
    );
    assert_eq!(
        tool.attribute("gen_ai.tool.name"),
        Some(&json!("get_weather"))
    );
    assert_eq!(tool.start_time_unix_nano, first.end_time_unix_nano);
    assert_eq!(tool.end_time_unix_nano, second.start_time_unix_nano);
    assert_eq!(tool.links[0].span_id, first.span_id);
    assert_eq!(second.trace_id, first.trace_id);
    // Both the tool answer and the history tie the second call to the first.
    assert_eq!(reason(&second), Some("conversation_prefix"));

    // The result is in every later request's history: the tool ran once.
    let written = link(&mut linker, &later);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].trace_id, first.trace_id);
}

#[test]
fn a_tool_answer_alone_links_when_the_history_was_rewritten() {
    let mut linker = Linker::default();
    let ask = Call::new(0, vec![user("q")], vec![asks_tool("toolu_9", "search")]);
    // A framework that re-sends only the tool result.
    let answer = Call::new(
        1_000,
        vec![user("q, rephrased"), tool_result("toolu_9")],
        vec![],
    );
    let first = link(&mut linker, &ask).pop().unwrap();
    let written = link(&mut linker, &answer);
    assert_eq!(written.len(), 2);
    assert_eq!(reason(&written[1]), Some("tool_call"));
    assert_eq!(written[1].trace_id, first.trace_id);
}

#[test]
fn a_traceparent_joins_the_callers_trace_and_makes_no_run() {
    let mut linker = Linker::default();
    let call = Call::new(0, vec![user("hi"), assistant("x"), user("y")], vec![]).header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let span = link(&mut linker, &call).pop().unwrap();
    assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(reason(&span), Some("traceparent"));
    assert!(
        linker.finish(u64::MAX / 2).is_empty(),
        "no invoke_agent root of ours"
    );
}

#[test]
fn a_fresh_conversation_on_the_same_thread_starts_a_new_run() {
    let mut linker = Linker::default();
    let mut calls = four_turns(0, "cats");
    calls.push(Call::new(
        10_000,
        vec![system("s"), user("new topic")],
        vec![],
    ));
    let spans = link_all(&mut linker, &calls);
    assert_ne!(spans[4].trace_id, spans[0].trace_id);
    assert_eq!(reason(&spans[4]), None);
    assert!(
        spans[4].links.is_empty(),
        "a fresh conversation is not linked"
    );
    assert_eq!(
        roots(&linker.finish(u64::MAX / 2)).len(),
        1,
        "the lone call adds no root"
    );
}

#[test]
fn identical_conversations_on_eight_threads_stay_on_their_threads() {
    let mut linker = Linker::default();
    // Every thread asks the same and gets the same answers, all at the same time.
    let mut calls = Vec::new();
    for turn in four_turns(0, "same") {
        for thread in 0..8u32 {
            calls.push(turn.clone().on(100, 200 + thread, 300 + u64::from(thread)));
        }
    }
    let spans = link_all(&mut linker, &calls);
    for thread in 0..8usize {
        let of_thread: Vec<&Span> = spans.iter().skip(thread).step_by(8).collect();
        assert_eq!(of_thread.len(), 4);
        assert!(
            of_thread
                .iter()
                .all(|s| s.trace_id == of_thread[0].trace_id)
        );
        for (other, span) in spans.iter().enumerate().take(8) {
            if other != thread {
                assert_ne!(span.trace_id, of_thread[0].trace_id);
            }
        }
    }
    assert_eq!(roots(&linker.finish(u64::MAX / 2)).len(), 8);
}

#[test]
fn concurrent_calls_on_one_thread_over_different_connections_stay_apart() {
    let mut linker = Linker::default();
    // Twenty identical few-shot requests in flight together on one event loop thread.
    let prompt = vec![
        user("classify: a"),
        assistant("positive"),
        user("classify: b"),
    ];
    let calls: Vec<Call> = (0..20u64)
        .map(|i| {
            Call::new(i * 5, prompt.clone(), vec![assistant("negative")])
                .lasting(500 - i * 10)
                .on(100, 100, 1_000 + i)
        })
        .collect();
    // They complete in any order.
    let mut order = calls.clone();
    order.reverse();
    let spans = link_all(&mut linker, &order);
    let traces: std::collections::HashSet<&String> = spans.iter().map(|s| &s.trace_id).collect();
    assert_eq!(traces.len(), 20, "every stream its own run");
    assert!(spans.iter().all(|s| s.links.is_empty()), "and no links");
    assert!(spans.iter().all(|s| reason(s).is_none()));
}

#[test]
fn same_thread_and_connection_gives_only_a_link() {
    let mut linker = Linker::default();
    let first = Call::new(
        0,
        vec![user("a"), assistant("b"), user("c")],
        vec![assistant("d")],
    );
    // Unrelated content, right after, same thread and connection.
    let second = Call::new(1_000, vec![user("x"), assistant("y"), user("z")], vec![]);
    // Same, but on another connection.
    let other_conn =
        Call::new(2_000, vec![user("p"), assistant("q"), user("r")], vec![]).on(100, 100, 2);
    // Same thread and connection but after the gap.
    let late =
        Call::new(60_000, vec![user("s"), assistant("t"), user("u")], vec![]).on(100, 100, 2);
    let spans = link_all(&mut linker, &[first, second, other_conn, late]);
    assert_ne!(
        spans[1].trace_id, spans[0].trace_id,
        "not joined: a link only"
    );
    assert_eq!(spans[1].parent_span_id, None, "a root of its own");
    assert_eq!(link_reasons(&spans[1]), ["same_thread"]);
    assert_eq!(spans[1].links[0].span_id, spans[0].span_id);
    assert_eq!(spans[1].links[0].trace_id, spans[0].trace_id);
    assert!(spans[2].links.is_empty(), "another connection");
    assert!(spans[3].links.is_empty(), "past the gap");
}

#[test]
fn other_processes_never_continue_a_run() {
    let mut linker = Linker::default();
    let calls = four_turns(0, "x");
    let first = link(&mut linker, &calls[0]).pop().unwrap();
    let elsewhere = link(&mut linker, &calls[1].clone().on(999, 999, 1))
        .pop()
        .unwrap();
    assert_ne!(first.trace_id, elsewhere.trace_id);
}

#[test]
fn a_run_closes_when_idle_or_when_its_process_exits() {
    let mut linker = Linker::new(LinkOptions {
        run_idle: Duration::from_secs(60),
        ..LinkOptions::default()
    });
    let calls = four_turns(0, "idle");
    let first = link(&mut linker, &calls[0]).pop().unwrap();
    link(&mut linker, &calls[1]);
    let other = link(&mut linker, &calls[0].clone().on(7, 7, 7))
        .pop()
        .unwrap();
    link(&mut linker, &calls[1].clone().on(7, 7, 7));
    let quiet_since = calls[1].end;
    assert!(linker.close_idle(quiet_since + 30 * SECOND).is_empty());
    let closed = linker.close_idle(quiet_since + 61 * SECOND);
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|r| r.attribute("observer.run.close_reason") == Some(&json!("idle")))
    );
    // The conversation comes back after the run closed: a new run, of two calls.
    let later = |call: &Call| {
        let mut call = call.clone();
        call.start += 120 * SECOND;
        call.end += 120 * SECOND;
        call
    };
    let resumed = link(&mut linker, &later(&calls[2])).pop().unwrap();
    assert_ne!(resumed.trace_id, first.trace_id);
    assert_ne!(resumed.trace_id, other.trace_id);
    link(&mut linker, &later(&calls[3]));
    // A lone call on another process: no root when its process exits.
    link(&mut linker, &calls[0].clone().on(8, 8, 8));
    assert!(linker.process_exited(8, 2_000 * SECOND).is_empty());

    let exited = linker.process_exited(100, 2_000 * SECOND);
    assert_eq!(roots(&exited).len(), 1);
    assert_eq!(exited[0].trace_id, resumed.trace_id);
    assert!(linker.finish(u64::MAX / 2).is_empty());
}

#[test]
fn too_many_open_runs_close_the_least_recent() {
    let mut linker = Linker::new(LinkOptions {
        max_runs: 3,
        ..LinkOptions::default()
    });
    let mut closed = Vec::new();
    for i in 0..5u64 {
        // Two turns each: runs that are agents, so closing them writes their roots.
        let question = user(&format!("fresh {i}"));
        let answer = assistant(&format!("answer {i}"));
        let turns = [
            Call::new(i * 1_000, vec![question.clone()], vec![answer.clone()]),
            Call::new(
                i * 1_000 + 500,
                vec![question, answer, user("more")],
                vec![],
            ),
        ];
        for call in &turns {
            closed.extend(link(&mut linker, call).into_iter().filter(|s| !s.is_call()));
        }
    }
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|r| r.attribute("observer.run.close_reason") == Some(&json!("too_many_runs")))
    );
    assert_eq!(linker.finish(u64::MAX / 2).len(), 3);
}

fn asks_bash(id: &str, script: &str) -> Value {
    json!({"role": "assistant", "finish_reason": "tool_call", "parts": [
        {"type": "tool_call", "id": id, "name": "Bash", "arguments": {"command": script}}]})
}

fn command(pid: u32, parent: u32, at_ms: u64, args: &[&str]) -> Command {
    Command {
        pid,
        ts: 1_000 * SECOND + at_ms * MS,
        agent: 100,
        parent,
        depth: if parent == 100 { 1 } else { 2 },
        path: format!("/usr/bin/{}", args[0]),
        args: args.iter().map(|a| a.to_string()).collect(),
        args_cut: false,
        cwd: Some("/work".into()),
    }
}

#[test]
fn a_command_the_model_asked_for_is_the_real_tool_span_with_its_process_under_it() {
    let mut linker = Linker::default();
    let script = "echo hi; ls /tmp; exit 3";
    let ask = Call::new(0, vec![user("run it")], vec![asks_bash("toolu_1", script)]);
    let first = link(&mut linker, &ask).pop().unwrap();
    // The shell the agent ran for the tool (after the answer), and a program the shell ran.
    assert!(
        linker
            .command_started(&command(201, 100, 200, &["bash", "-c", script]))
            .is_empty()
    );
    linker.command_started(&command(202, 201, 210, &["ls", "/tmp"]));
    // A program the agent ran that no tool call asked for.
    linker.command_started(&command(203, 100, 220, &["git", "status"]));
    let ls = linker.command_ended(202, 1_000 * SECOND + 250 * MS, Ending::Exited(0));
    let shell = linker.command_ended(201, 1_000 * SECOND + 300 * MS, Ending::Exited(3));
    let git = linker.command_ended(
        203,
        1_000 * SECOND + 400 * MS,
        Ending::Killed {
            signal: 9,
            core_dumped: false,
        },
    );
    let ([ls], [shell], [git]) = (&ls[..], &shell[..], &git[..]) else {
        panic!("one span per process: {ls:?} {shell:?} {git:?}")
    };
    let history = vec![
        user("run it"),
        asks_bash("toolu_1", script),
        tool_result("toolu_1"),
    ];
    let mut written = link(
        &mut linker,
        &Call::new(1_000, history, vec![assistant("done")]),
    );
    let second = written.pop().unwrap();
    let [tool] = &written[..] else {
        panic!("one execute_tool span: {written:?}")
    };
    assert_eq!(tool.name, "execute_tool Bash");
    assert_eq!(tool.attribute(attr::TOOL_CALL_ID), Some(&json!("toolu_1")));
    assert_eq!(reason(tool), Some("command_line"));
    // The tool spans what ran, not the gap between the calls.
    assert_eq!(
        (tool.start_time_unix_nano, tool.end_time_unix_nano),
        (shell.start_time_unix_nano, shell.end_time_unix_nano)
    );
    assert_eq!(shell.parent_span_id.as_ref(), Some(&tool.span_id));
    assert_eq!(ls.parent_span_id.as_ref(), Some(&shell.span_id));
    assert_eq!(
        git.parent_span_id, second.parent_span_id,
        "under the run's root"
    );
    for span in [ls, shell, git, tool] {
        assert_eq!(span.trace_id, first.trace_id);
    }
    assert_eq!(shell.name, "exec bash");
    assert_eq!(shell.attribute(attr::PROCESS_EXIT_CODE), Some(&json!(3)));
    assert_eq!(shell.gen_ai.error_type.as_deref(), Some("3"));
    assert_eq!(
        shell.attribute(attr::PROCESS_COMMAND_ARGS),
        Some(&json!(["bash", "-c", script]))
    );
    assert_eq!(
        shell.attribute(attr::PROCESS_WORKING_DIRECTORY),
        Some(&json!("/work"))
    );
    assert_eq!(ls.gen_ai.error_type, None);
    assert_eq!(git.attribute(attr::PROCESS_EXIT_CODE), Some(&json!(137)));
    assert_eq!(git.gen_ai.error_type.as_deref(), Some("SIGKILL"));
    assert_eq!(reason(git), Some("agent_process"));
    assert_eq!(linker.command_stats().spans, 3);
}

#[test]
fn a_command_still_running_ends_with_its_run_and_content_none_keeps_only_the_name() {
    let mut linker = Linker::new(LinkOptions {
        content: ContentMode::None,
        ..LinkOptions::default()
    });
    let ask = Call::new(0, vec![user("start the server")], vec![assistant("ok")]);
    link(&mut linker, &ask);
    linker.command_started(&command(
        301,
        100,
        500,
        &["npm", "run", "dev", "--token", "s3"],
    ));
    // Another agent's command, outside any run: counted, not written.
    let mut stranger = command(401, 400, 500, &["ls"]);
    stranger.agent = 400;
    linker.command_started(&stranger);
    let closed = linker.process_exited(100, 1_000 * SECOND + 900 * MS);
    let server = closed
        .iter()
        .find(|s| s.name == "exec npm")
        .expect("the server's span");
    assert_eq!(server.end_time_unix_nano, 1_000 * SECOND + 900 * MS);
    assert_eq!(
        server.attribute(attr::OBSERVER_PROCESS_STILL_RUNNING),
        Some(&json!(true))
    );
    assert_eq!(server.attribute(attr::PROCESS_COMMAND_ARGS), None);
    assert_eq!(server.attribute(attr::PROCESS_WORKING_DIRECTORY), None);
    assert_eq!(
        server.attribute(attr::PROCESS_EXECUTABLE_NAME),
        Some(&json!("npm"))
    );
    // A run of one call that ran something is an agent: its root is written, parent of the command.
    let root = roots(&closed)[0];
    assert_eq!(server.parent_span_id.as_ref(), Some(&root.span_id));
    assert_eq!(linker.command_stats().outside_runs, 1);
    // Its exit, later, writes nothing more.
    assert!(
        linker
            .command_ended(301, 1_000 * SECOND + 950 * MS, Ending::Exited(0))
            .is_empty()
    );
}

#[test]
fn tool_arguments_ask_for_a_command_line_only_when_they_hold_it() {
    use super::commands::asks_for;
    let line = "bash -c -l source snap.sh && eval 'echo '\\''a b'\\''' < /dev/null";
    assert!(
        asks_for(&json!({"command": "echo 'a b'"}), line),
        "shell-quoted"
    );
    assert!(
        asks_for(&json!("{\"cmd\": [\"ls\", \"-la\"]}"), "ls -la"),
        "OpenAI's string"
    );
    assert!(asks_for(&json!({"argv": ["ls", "-la"]}), "ls -la"));
    assert!(
        !asks_for(&json!({"path": "/tmp"}), "ls /tmp"),
        "a lone word is no command line"
    );
    assert!(!asks_for(&json!({"command": "make test"}), "make build"));
}

fn mcp_span(start_ms: u64, end_ms: u64, name: &str) -> Span {
    Span {
        trace_id: String::new(),
        span_id: String::new(),
        parent_span_id: None,
        name: name.into(),
        kind: SpanKind::Client,
        start_time_unix_nano: 1_000 * SECOND + start_ms * MS,
        end_time_unix_nano: 1_000 * SECOND + end_ms * MS,
        gen_ai: GenAi::default(),
        attributes: serde_json::Map::new(),
        links: Vec::new(),
    }
}

#[test]
fn an_mcp_tool_call_is_the_real_tool_span_and_other_requests_join_the_run() {
    let mut linker = Linker::default();
    // Listing tools before any call: a trace of its own.
    let [listed] = &linker.mcp_request(100, None, mcp_span(0, 5, "tools/list"))[..] else {
        panic!("one span")
    };
    assert_eq!(listed.parent_span_id, None);
    assert!(!listed.trace_id.is_empty());
    let ask = Call::new(
        10,
        vec![user("weather in Paris?")],
        vec![asks_tool("call_9", "mcp__weather__get_weather")],
    );
    let first = link(&mut linker, &ask).pop().unwrap();
    let arguments = json!({"city": "Paris"});
    let tool = Some(("get_weather", &arguments));
    let [request] =
        &linker.mcp_request(100, tool, mcp_span(300, 340, "tools/call get_weather"))[..]
    else {
        panic!("one span")
    };
    let history = vec![
        user("weather in Paris?"),
        asks_tool("call_9", "mcp__weather__get_weather"),
        tool_result("call_9"),
    ];
    let mut written = link(
        &mut linker,
        &Call::new(1_000, history, vec![assistant("18C")]),
    );
    let answer = written.pop().unwrap();
    let [execute] = &written[..] else {
        panic!("one execute_tool span: {written:?}")
    };
    assert_eq!(request.parent_span_id.as_ref(), Some(&execute.span_id));
    assert_eq!(reason(request), Some("mcp_tool_call"));
    assert_eq!(reason(execute), Some("mcp_tool_call"));
    assert_eq!(
        (execute.start_time_unix_nano, execute.end_time_unix_nano),
        (request.start_time_unix_nano, request.end_time_unix_nano)
    );
    assert_eq!(execute.parent_span_id, answer.parent_span_id);
    for span in [request, execute, &answer] {
        assert_eq!(span.trace_id, first.trace_id);
    }
    // A request no tool call asked for, in the run: under its root.
    let [ping] = &linker.mcp_request(100, None, mcp_span(1_200, 1_201, "ping"))[..] else {
        panic!("one span")
    };
    assert_eq!(ping.parent_span_id, answer.parent_span_id);
    assert_eq!(reason(ping), Some("agent_request"));
}

#[test]
fn a_run_started_inside_a_task_tool_is_a_sub_agent_under_that_tool() {
    let mut linker = Linker::default();
    let task = json!({"role": "assistant", "finish_reason": "tool_call", "parts": [
        {"type": "tool_call", "id": "toolu_task", "name": "Task",
         "arguments": {"description": "look around", "prompt": "list the files"}}]});
    let ask = Call::new(0, vec![user("explore the repo")], vec![task.clone()]);
    let first = link(&mut linker, &ask).pop().unwrap();
    // The sub-agent's conversation, in the same process, while the Task call is open.
    let sub_first = Call::new(
        500,
        vec![user("list the files")],
        vec![asks_tool("t2", "ls")],
    );
    let sub_call = link(&mut linker, &sub_first).pop().unwrap();
    let sub_history = vec![
        user("list the files"),
        asks_tool("t2", "ls"),
        tool_result("t2"),
    ];
    let sub_second = link(
        &mut linker,
        &Call::new(800, sub_history, vec![assistant("a, b")]),
    );
    let history = vec![user("explore the repo"), task, tool_result("toolu_task")];
    let mut written = link(
        &mut linker,
        &Call::new(2_000, history, vec![assistant("done")]),
    );
    let answer = written.pop().unwrap();
    let task_span = written
        .iter()
        .find(|s| s.name == "execute_tool Task")
        .expect("the Task tool's span");
    assert_eq!(reason(task_span), Some("sub_agent_tool"));
    let closed = linker.finish(1_000 * SECOND + 3_000 * MS);
    let sub_root = closed
        .iter()
        .find(|s| s.parent_span_id.as_ref() == Some(&task_span.span_id))
        .expect("the sub-agent's invoke_agent under the Task span");
    assert_eq!(sub_root.name, "invoke_agent");
    assert_eq!(sub_call.parent_span_id.as_ref(), Some(&sub_root.span_id));
    assert_eq!(reason(&sub_call), Some("sub_agent_tool"));
    assert_eq!(
        sub_second.last().unwrap().parent_span_id.as_ref(),
        Some(&sub_root.span_id)
    );
    for span in [&sub_call, sub_root, task_span, &answer] {
        assert_eq!(span.trace_id, first.trace_id);
    }
}

#[test]
fn a_child_process_making_llm_calls_is_a_sub_agent_under_its_command() {
    let mut linker = Linker::default();
    let script = "python sub_agent.py";
    link(
        &mut linker,
        &Call::new(0, vec![user("delegate")], vec![asks_bash("b1", script)]),
    );
    linker.command_started(&command(201, 100, 200, &["sh", "-c", script]));
    linker.command_started(&command(202, 201, 210, &["python", "sub_agent.py"]));
    let sub = link(
        &mut linker,
        &Call::new(300, vec![user("sub task")], vec![assistant("ok")]).on(202, 202, 9),
    )
    .pop()
    .unwrap();
    let python = linker.command_ended(202, 1_000 * SECOND + 600 * MS, Ending::Exited(0));
    let closed = linker.process_exited(202, 1_000 * SECOND + 600 * MS);
    let sub_root = closed
        .iter()
        .find(|s| s.name == "invoke_agent")
        .expect("the sub-agent's root, closed with its process");
    let python = python
        .iter()
        .find(|s| s.name == "exec python")
        .expect("its command");
    assert_eq!(sub_root.parent_span_id.as_ref(), Some(&python.span_id));
    assert_eq!(sub.parent_span_id.as_ref(), Some(&sub_root.span_id));
    assert_eq!(sub.trace_id, python.trace_id);
    assert_eq!(reason(sub_root), Some("child_process"));
}
