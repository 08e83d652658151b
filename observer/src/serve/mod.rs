//! `observer serve` (and `observer run` with `[serve]` on): the store as pages to browse and
//! as a JSON API, over HTTP. Every request is authenticated unless asked otherwise (see
//! [`auth`]): loopback is no boundary on a host with several users, and the store holds
//! every prompt and answer captured.
//!
//! - `GET /`: the pages (traces, one trace, one call, usage), files compiled into the binary
//! - `GET /api/traces?where=FIELD:OP:VALUE&since=&limit=&offset=&order_by=&before=`
//! - `GET /api/traces/{trace_id}?content=false`: every span of the trace
//! - `GET /api/spans?…`: spans, with the same parameters as traces
//! - `GET /api/spans/{span_id}`: one span, the spans it links to and those linking to it
//! - `GET /api/spans/{span_id}/tree?max_depth=N&attributes_to_return=a,b`
//! - `GET /api/facets`, `GET /api/usage?from=&to=&buckets=&by=`
//! - `GET /api/live?after=ROWID`: spans as they are written (server-sent events)
mod api;
pub mod auth;
mod live;
mod pages;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use axum::{Router, middleware, routing::get};

pub use auth::Access;

use crate::store::Store;

/// What the handlers share: the store (one connection; SQLite's WAL lets the writer go on).
struct Api {
    store: Mutex<Store>,
}

type Shared = Arc<Api>;

/// The pages and the API over `store`, for a server bound to `listen`, letting in what
/// `access` allows.
pub fn router(store: Store, access: Access, listen: SocketAddr) -> Router {
    let api = Arc::new(Api {
        store: Mutex::new(store),
    });
    let gate = Arc::new(auth::Gate::new(access, listen));
    Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .route("/api/live", get(live::events))
        .with_state(api)
        .layer(middleware::from_fn_with_state(gate, auth::authorize))
        .layer(middleware::from_fn(pages::security_headers))
}

pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> anyhow::Result<()> {
    axum::serve(listener, router).await?;
    Ok(())
}

/// A bound server, to be run once its address is printed.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    /// The address to open: with the token, when there is one.
    pub url: String,
}

/// Binds `listen` for the pages and the API over `store`.
pub async fn bind(store: Store, access: Access, listen: SocketAddr) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} (pick another address with --listen)"))?;
    let bound = listener.local_addr()?;
    Ok(Server {
        listener,
        url: access.url(bound),
        router: router(store, access, bound),
    })
}

impl Server {
    pub async fn run(self) -> anyhow::Result<()> {
        serve(self.listener, self.router).await
    }
}

#[cfg(test)]
mod tests;
