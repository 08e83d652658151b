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
    let mut best: Option<(Rank, Continuation)> = None;
    for (&id, run) in runs {
        if run.site.pid != site.pid {
            continue;
        }
        let mut signals = signals(run, start, keys);
        if keys.starts_conversation {
            signals.retain(|(signal, _)| signal.is_explicit());
        }
        let Some((strongest, predecessor)) = signals.iter().max_by_key(|(s, _)| *s).cloned() else {
            continue;
        };
        let rank = (
            strongest,
            signals.len(),
            run.site.tid == site.tid,
            run.site.conn == site.conn,
            run.end,
        );
        if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
            let continuation = Continuation {
                run: id,
                signal: strongest,
                predecessor,
            };
            best = Some((rank, continuation));
        }
    }
    best.map(|(_, continuation)| continuation)
}

/// Every signal that the call, started at `start`, continues `run`, each with the run's call it
/// points at. Content can only continue what had ended before the request began: identical
/// requests in flight together are separate conversations, not retries of one another.
fn signals(run: &Run, start: u64, keys: &LinkKeys) -> Vec<(Signal, String)> {
    let mut found = Vec::new();
    if let Some(span) = keys
        .previous_response_id
        .as_ref()
        .and_then(|id| run.response_ids.get(id))
    {
        found.push((Signal::PreviousResponse, span.clone()));
    }
    let last_call = run.frontier.as_ref().map(|f| f.span_id.clone());
    if let (Some(id), Some(span)) = (&keys.conversation_id, &last_call)
        && run.conversation_id.as_ref() == Some(id)
    {
        found.push((Signal::ConversationId, span.clone()));
    }
    if let Some(span) = &last_call
        && keys
            .tool_results
            .iter()
            .any(|id| run.open_tool_asked_at(id).is_some_and(|at| at <= start))
    {
        found.push((Signal::ToolCall, span.clone()));
    }
    if let Some(frontier) = run.frontier.as_ref().filter(|f| f.end <= start) {
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
            found.push((Signal::ConversationPrefix, frontier.span_id.clone()));
        } else if frontier.output.iter().any(|out| input.contains(out)) {
            // The history was cut or rewritten, but the last answer is in it.
            found.push((Signal::ConversationOverlap, frontier.span_id.clone()));
        }
    }
    found
}
