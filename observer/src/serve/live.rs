//! Spans as they are written, as server-sent events: each client polls the store by the
//! spans' sequence numbers (a store written by another process, `observer capture --store` or
//! the daemon, says nothing when it grows).
use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Query as UrlQuery, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::{
    Shared,
    api::{ApiError, spans_json, with_store},
};

/// How often the store is looked at for new rows.
const POLL: Duration = Duration::from_secs(1);
/// Spans sent in one event at most; more follow in the next.
const BATCH: usize = 500;

#[derive(Deserialize)]
pub struct LiveParams {
    /// The last sequence number the client has; only spans written from now on when absent.
    after: Option<i64>,
}

/// `ready` with the row to start after, then `spans` with each batch of new spans (without
/// message text). Each event's id is the last sequence number the client has: a browser reconnecting
/// sends it back as `Last-Event-ID`, and misses nothing.
pub async fn events(
    State(api): State<Shared>,
    headers: HeaderMap,
    UrlQuery(params): UrlQuery<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resumed = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok()?.parse().ok());
    let after = match resumed.or(params.after) {
        Some(after) => after,
        None => with_store(api.clone(), |store| store.last_rowid()).await?,
    };
    let ready = Event::default()
        .event("ready")
        .id(after.to_string())
        .data(json!({ "after": after }).to_string());
    let batches = stream::unfold((api, after), |(api, after)| async move {
        loop {
            tokio::time::sleep(POLL).await;
            let read = with_store(api.clone(), move |store| store.spans_after(after, BATCH)).await;
            let rows = match read {
                Ok(rows) => rows,
                // Busy or briefly unreadable (a writer checkpointing): look again next time.
                Err(ApiError(_, error)) => {
                    log::warn!("live view: reading new spans: {error}");
                    continue;
                }
            };
            let Some(&(last, _)) = rows.last() else {
                continue;
            };
            let spans: Vec<_> = rows.into_iter().filter_map(|(_, span)| span).collect();
            let data = json!({ "last_seq": last, "spans": spans_json(&spans, false) });
            let event = Event::default()
                .event("spans")
                .id(last.to_string())
                .data(data.to_string());
            return Some((Ok(event), (api, last)));
        }
    });
    let events = stream::once(async { Ok(ready) }).chain(batches);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
