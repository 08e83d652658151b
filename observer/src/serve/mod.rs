//! `observer serve`: the store as a JSON API over HTTP.
//!
//! - `GET /api/traces?where=FIELD:OP:VALUE&since=&limit=&offset=&order_by=`
//! - `GET /api/traces/{trace_id}`: every span of the trace
//! - `GET /api/spans?…`: spans, with the same parameters as traces
//! - `GET /api/spans/{span_id}/tree?max_depth=N&attributes_to_return=a,b`
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::bail;
use axum::{
    Json, Router,
    extract::{Path, Query as UrlQuery, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    query::{
        Query, trace_order_column,
        tree::{self, AttributeSelection},
    },
    store::Store,
};

struct Api {
    store: Mutex<Store>,
    token: Option<String>,
}

type Shared = Arc<Api>;

/// Refuses to expose captured LLM traffic beyond this host without a token.
pub fn check_exposure(listen: &SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() && token.is_none_or(str::is_empty) {
        bail!(
            "refusing to listen on {listen} without --token: the API serves captured LLM \
             prompts and responses. Pass --token TOKEN (clients then send \
             `Authorization: Bearer TOKEN`), or listen on 127.0.0.1"
        );
    }
    Ok(())
}

pub fn router(store: Store, token: Option<String>) -> Router {
    let api = Arc::new(Api {
        store: Mutex::new(store),
        token,
    });
    Router::new()
        .route("/api/traces", get(list_traces))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/spans", get(list_spans))
        .route("/api/spans/{span_id}/tree", get(span_tree))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> anyhow::Result<()> {
    axum::serve(listener, router).await?;
    Ok(())
}

/// An error as the API answers it: a status and `{"error": "..."}`.
struct ApiError(StatusCode, String);

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

async fn authorize(State(api): State<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = &api.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented.is_some_and(|p| same_secret(p.as_bytes(), token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer TOKEN` with the token given to `observer serve`".into(),
        )
        .into_response()
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a store read off the async threads.
async fn with_store<T: Send + 'static>(
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

fn spans_json(spans: &[crate::span::Span]) -> Value {
    Value::Array(
        spans
            .iter()
            .map(|span| tree::span_json(span, &AttributeSelection::All))
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
    let traces = with_store(api, move |store| store.traces(&query)).await?;
    Ok(Json(json!({ "traces": traces })))
}

async fn list_spans(
    State(api): State<Shared>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let query = Query::from_pairs(&pairs).map_err(bad_request)?;
    let spans = with_store(api, move |store| store.spans(&query)).await?;
    Ok(Json(json!({ "spans": spans_json(&spans) })))
}

async fn trace(
    State(api): State<Shared>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = trace_id.clone();
    let spans = with_store(api, move |store| store.trace_spans(&id)).await?;
    if spans.is_empty() {
        return Err(not_found(format!("no trace {trace_id} in the store")));
    }
    Ok(Json(
        json!({ "trace_id": trace_id, "spans": spans_json(&spans) }),
    ))
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

#[cfg(test)]
mod tests;
