//! The pages: hand-written HTML, CSS and JavaScript compiled into the binary (no CDN, no build
//! step), and the headers every answer carries. Message text is untrusted input: the scripts
//! build the page with `textContent` only, and the policy below forbids inline scripts and
//! styles, so text shaped like HTML stays text.
use axum::{
    Router,
    extract::{Path, Request},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};

use super::Shared;

/// Each file as served: its name, type and content.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("web/app.js")),
    ("api.js", JS, include_str!("web/api.js")),
    ("format.js", JS, include_str!("web/format.js")),
    ("traces.js", JS, include_str!("web/traces.js")),
    ("trace.js", JS, include_str!("web/trace.js")),
    ("call.js", JS, include_str!("web/call.js")),
    ("usage.js", JS, include_str!("web/usage.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("web/style.css"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("web/icon.svg")),
];
const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("web/index.html");

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/static/{file}", get(file))
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, *kind)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// Scripts and styles from this server only, nothing inline, no frames, no plugins; nothing
/// cached (the data is private), no type guessing, no referrer.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
];

pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}
