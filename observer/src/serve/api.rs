//! The JSON API: traces, spans, trees, the values to filter on, usage over time.
use axum::{
    Json, Router,
    extract::{Path, Query as UrlQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Shared, Store};
use crate::{
    llm::{attr, content::MESSAGE_ATTRIBUTES},
    query::{
        Cursor, Query, trace_order_column,
        tree::{self, AttributeSelection},
    },
    span::Span,
    store::{UsageKey, UsageQuery},
};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/traces", get(list_traces))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/spans", get(list_spans))
        .route("/api/spans/{span_id}", get(span))
        .route("/api/spans/{span_id}/tree", get(span_tree))
        .route("/api/facets", get(facets))
        .route("/api/usage", get(usage))
}

/// An error as the API answers it: a status and `{"error": "..."}`.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(error: anyhow::Error) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, format!("{error:#}"))
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

/// Runs a store read off the async threads.
pub async fn with_store<T: Send + 'static>(
    api: Shared,
    read: impl FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let internal = |message: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, message);
    tokio::task::spawn_blocking(move || {
        let store = api
            .store
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
        read(&store)
    })
    .await
    .map_err(|error| internal(error.to_string()))?
    .map_err(|error| internal(format!("{error:#}")))
}

/// Attributes too large for a list or a waterfall: what users and models wrote, and the tool
/// definitions sent with each call.
fn is_content(key: &str) -> bool {
    MESSAGE_ATTRIBUTES.contains(&key) || key == attr::TOOL_DEFINITIONS
}

pub(super) fn spans_json(spans: &[Span], with_content: bool) -> Value {
    Value::Array(
        spans
            .iter()
            .map(|span| {
                let mut value = tree::span_json(span, &AttributeSelection::All);
                if !with_content && let Some(attributes) = value["attributes"].as_object_mut() {
                    attributes.retain(|key, _| !is_content(key));
                }
                value
            })
            .collect(),
    )
}

async fn list_traces(
    State(api): State<Shared>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let query = Query::from_pairs(&pairs).map_err(bad_request)?;
    if let Some(order) = &query.order_by {
        trace_order_column(order).map_err(bad_request)?;
    }
    let limit = query.limit as usize;
    let paged_by_cursor = query.order_by.is_none() && query.offset == 0;
    let traces = with_store(api, move |store| store.traces(&query)).await?;
    // A full page newest first says where the next one starts.
    let next = (paged_by_cursor && traces.len() == limit)
        .then(|| traces.last())
        .flatten()
        .map(|last| {
            Cursor {
                start_ns: last.start_time_unix_nano,
                trace_id: last.trace_id.clone(),
            }
            .to_string()
        });
    Ok(Json(json!({ "traces": traces, "next": next })))
}

async fn list_spans(
    State(api): State<Shared>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let query = Query::from_pairs(&pairs).map_err(bad_request)?;
    let spans = with_store(api, move |store| store.spans(&query)).await?;
    Ok(Json(json!({ "spans": spans_json(&spans, true) })))
}

#[derive(Deserialize)]
struct TraceParams {
    /// `false`: without message text and tool definitions (for the waterfall).
    content: Option<bool>,
}

async fn trace(
    State(api): State<Shared>,
    Path(trace_id): Path<String>,
    UrlQuery(params): UrlQuery<TraceParams>,
) -> Result<Json<Value>, ApiError> {
    let id = trace_id.clone();
    let spans = with_store(api, move |store| store.trace_spans(&id)).await?;
    if spans.is_empty() {
        return Err(not_found(format!("no trace {trace_id} in the store")));
    }
    let spans = spans_json(&spans, params.content.unwrap_or(true));
    Ok(Json(json!({ "trace_id": trace_id, "spans": spans })))
}

/// A span named by another: enough to show and follow the link.
fn linked_json(span: &Span, reason: Option<&Value>) -> Value {
    json!({
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "name": span.name,
        "start_time_unix_nano": span.start_time_unix_nano,
        "reason": reason,
    })
}

/// One span with every attribute, the spans its links name (`links_to`) and the spans whose
/// links name it (`linked_from`), each with the link's reason.
async fn span(
    State(api): State<Shared>,
    Path(span_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = span_id.clone();
    let found = with_store(api, move |store| {
        let Some(span) = store.span(&id)? else {
            return Ok(None);
        };
        let mut links_to = Vec::new();
        for link in &span.links {
            let reason = link.attributes.get(attr::OBSERVER_LINK_REASON);
            links_to.push(match store.span(&link.span_id)? {
                Some(target) => linked_json(&target, reason),
                // Not (or no longer) in the store: the link still says where it went.
                None => json!({"trace_id": link.trace_id, "span_id": link.span_id,
                               "name": null, "reason": reason}),
            });
        }
        let linked_from: Vec<Value> = store
            .linked_from(&id, span.start_time_unix_nano)?
            .iter()
            .map(|later| {
                let link = later.links.iter().find(|link| link.span_id == id);
                linked_json(
                    later,
                    link.and_then(|l| l.attributes.get(attr::OBSERVER_LINK_REASON)),
                )
            })
            .collect();
        Ok(Some(json!({
            "span": tree::span_json(&span, &AttributeSelection::All),
            "links_to": links_to,
            "linked_from": linked_from,
        })))
    })
    .await?
    .ok_or_else(|| not_found(format!("no span {span_id} in the store")))?;
    Ok(Json(found))
}

#[derive(Deserialize)]
struct TreeParams {
    max_depth: Option<u32>,
    /// Comma-separated attribute keys; all attributes when absent.
    attributes_to_return: Option<String>,
}

async fn span_tree(
    State(api): State<Shared>,
    Path(span_id): Path<String>,
    UrlQuery(params): UrlQuery<TreeParams>,
) -> Result<Json<Value>, ApiError> {
    let id = span_id.clone();
    let subtree = with_store(api, move |store| {
        let Some(span) = store.span(&id)? else {
            return Ok(None);
        };
        Ok(tree::subtree(store.trace_spans(&span.trace_id)?, &id))
    })
    .await?
    .ok_or_else(|| not_found(format!("no span {span_id} in the store")))?;
    let keys: Option<Vec<String>> = params.attributes_to_return.map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect()
    });
    let selection = match &keys {
        Some(keys) => AttributeSelection::Only(keys),
        None => AttributeSelection::All,
    };
    Ok(Json(tree::to_json(&subtree, params.max_depth, &selection)))
}

async fn facets(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    let facets = with_store(api, |store| store.facets()).await?;
    Ok(Json(json!(facets)))
}

#[derive(Deserialize)]
struct UsageParams {
    /// Unix nanoseconds.
    from: u64,
    to: u64,
    buckets: Option<u32>,
    by: Option<String>,
}

async fn usage(
    State(api): State<Shared>,
    UrlQuery(params): UrlQuery<UsageParams>,
) -> Result<Json<Value>, ApiError> {
    let by: UsageKey = params
        .by
        .as_deref()
        .unwrap_or("model")
        .parse()
        .map_err(bad_request)?;
    let query = UsageQuery::new(params.from, params.to, params.buckets.unwrap_or(60), by)
        .map_err(bad_request)?;
    let usage = with_store(api, move |store| store.usage(&query)).await?;
    Ok(Json(json!(usage)))
}
