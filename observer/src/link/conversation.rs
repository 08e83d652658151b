//! The signals that a call continues a run's conversation, and the choice of run when several
//! could claim it.
use super::{
    Signal,
    run::{CallSite, Run},
};
use crate::llm::LinkKeys;

/// The run a call continues, why, and the call it follows.
pub(super) struct Continuation {
    pub run: u64,
    pub signal: Signal,
    pub predecessor: String,
}

/// How surely a call continues a run: strongest signal, number of signals, same thread, same
/// connection, last activity.
type Rank = (Signal, usize, bool, bool, u64);

/// The run of the call's process that it most surely continues, if any does.
///
/// The strongest signal decides; among runs with the same strongest signal, the one with more
/// signals, then the one on the call's own thread, then on its connection, then the one active
/// last. A call that starts a conversation continues a run only when it names it (a previous
/// response id, a conversation id): its lone message says nothing about what came before.
pub(super) fn find<'a>(
    runs: impl Iterator<Item = (&'a u64, &'a Run)>,
    site: CallSite,
    start: u64,
    keys: &LinkKeys,
) -> Option<Continuation> {
    if keys.starts_conversation
        && keys.previous_response_id.is_none()
        && keys.conversation_id.is_none()
    {
        return None; // it names no run, and its content is not looked at
    }
    // The winner's predecessor is only copied out at the end: most runs are looked at and passed.
    let mut best: Option<(Rank, u64, &str)> = None;
    for (&id, run) in runs {
        if run.site.pid != site.pid {
            continue;
        }
        let signals = signals(run, start, keys);
        let Some((strongest, predecessor)) = signals.iter().flatten().max_by_key(|(s, _)| *s)
        else {
            continue;
        };
        let rank = (
            *strongest,
            signals.iter().flatten().count(),
            run.site.tid == site.tid,
            run.site.conn == site.conn,
            run.end,
        );
        if best
            .as_ref()
            .is_none_or(|(best_rank, ..)| rank > *best_rank)
        {
            best = Some((rank, id, *predecessor));
        }
    }
    best.map(|((signal, ..), run, predecessor)| Continuation {
        run,
        signal,
        predecessor: predecessor.to_owned(),
    })
}

/// Every signal that the call, started at `start`, continues `run`, each with the run's call it
/// points at. Content can only continue what had ended before the request began: identical
/// requests in flight together are separate conversations, not retries of one another. A call
/// that starts a conversation gets only the explicit signals (its content is not looked at).
fn signals<'r>(run: &'r Run, start: u64, keys: &LinkKeys) -> [Option<(Signal, &'r str)>; 4] {
    let previous_response = keys
        .previous_response_id
        .as_ref()
        .and_then(|id| run.response_ids.get(id))
        .map(|span| (Signal::PreviousResponse, span.as_str()));
    let last_call = run.frontier.as_ref().map(|f| f.span_id.as_str());
    let conversation_id = last_call
        .filter(|_| keys.conversation_id.is_some() && run.conversation_id == keys.conversation_id)
        .map(|span| (Signal::ConversationId, span));
    if keys.starts_conversation {
        return [previous_response, conversation_id, None, None];
    }
    let tool_call = last_call
        .filter(|_| {
            keys.tool_results
                .iter()
                .any(|id| run.open_tool_asked_at(id).is_some_and(|at| at <= start))
        })
        .map(|span| (Signal::ToolCall, span));
    let content = run
        .frontier
        .as_ref()
        .filter(|f| f.end <= start)
        .and_then(|frontier| {
            let input = &keys.input;
            let extends = !frontier.input.is_empty()
                && input.starts_with(&frontier.input)
                && match input.get(frontier.input.len()) {
                    // The same messages again: a retry, or a regenerated answer.
                    None => true,
                    // The next message is (one of) the answer(s) the last call got.
                    Some(next) => frontier.output.contains(next),
                };
            if extends {
                Some(Signal::ConversationPrefix)
            } else if frontier.output.iter().any(|out| input.contains(out)) {
                // The history was cut or rewritten, but the last answer is in it.
                Some(Signal::ConversationOverlap)
            } else {
                None
            }
            .map(|signal| (signal, frontier.span_id.as_str()))
        });
    [previous_response, conversation_id, tool_call, content]
}
