//! A mock LLM API server for the observer's end-to-end tests.
//!
//! TLS is rustls (never OpenSSL, so the observer's OpenSSL probes only ever see the client
//! side). HTTP/2 for clients that offer it by ALPN (each stream served concurrently), else
//! HTTP/1.1 with keep-alive and Content-Length or chunked request bodies. It
//! speaks the real wire formats of OpenAI (chat completions, responses, embeddings, legacy
//! completions) and Anthropic (messages), as JSON and as SSE. Every answer is a deterministic
//! function of the request (see `observer_e2e::mock`); magic words in the last user message
//! switch scenarios (`observer_e2e::mock::scenario`).
//!
//! Usage: `llm-mock-server [--port N] [--cert-dir DIR] [--plain]`. The first line on stdout is
//! `listening 127.0.0.1:PORT cert=DIR/ca.pem`; then one JSON line per request served. With
//! `--plain` it speaks HTTP/1.1 without TLS (the certificate is written but unused).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use observer_e2e::mock::{self, CANARY_API_KEY, scenario};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

mod bedrock;
mod gemini;
mod ollama;

const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
const CREATED: u64 = 1_750_000_000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut port = 0u16;
    let mut cert_dir: Option<PathBuf> = None;
    let mut plain = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().context("--port needs a value")?.parse()?,
            "--plain" => plain = true,
            "--cert-dir" => {
                cert_dir = Some(args.next().context("--cert-dir needs a value")?.into())
            }
            other => bail!(
                "unknown argument {other:?}; usage: llm-mock-server [--port N] [--cert-dir DIR] [--plain]"
            ),
        }
    }
    let cert_dir = cert_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("llm-mock-server-{}", std::process::id()))
    });
    std::fs::create_dir_all(&cert_dir)?;
    let (tls_config, ca_pem) = tls_config()?;
    let ca_path = cert_dir.join("ca.pem");
    std::fs::write(&ca_path, ca_pem)?;

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    println!("listening {addr} cert={}", ca_path.display());
    std::io::stdout().flush()?;

    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    let mut conn_id = 0u64;
    loop {
        let (tcp, _) = listener.accept().await?;
        conn_id += 1;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = async {
                if plain {
                    // Plaintext HTTP/1.1, as Ollama and local OpenAI-compatible servers speak it.
                    return serve_connection(tcp, conn_id).await;
                }
                let tls = acceptor.accept(tcp).await.context("TLS handshake")?;
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    serve_h2_connection(tls, conn_id).await
                } else {
                    serve_connection(tls, conn_id).await
                }
            }
            .await;
            if let Err(e) = result {
                eprintln!("conn {conn_id}: {e:#}");
            }
        });
    }
}

/// A CA and a leaf for 127.0.0.1/localhost signed by it; returns the server config and the
/// CA certificate (PEM) that clients trust.
fn tls_config() -> Result<(rustls::ServerConfig, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "observer-e2e mock CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut leaf_params = CertificateParams::new(Vec::<String>::new())?;
    leaf_params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, ca.pem()))
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A buffered connection.
struct Conn<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Reads more bytes into the buffer; false at end of stream.
    async fn fill(&mut self) -> Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                bail!("connection closed in the middle of a request body");
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.drain(..pos + 2).collect::<Vec<_>>();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if self.buf.len() > MAX_HEAD_BYTES || !self.fill().await? {
                bail!("bad chunked body framing");
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next request, or None when the client closed the connection between requests.
    async fn read_request(&mut self) -> Result<Option<Request>> {
        let (head_len, method, path, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf)? {
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (
                    len,
                    parsed.method.unwrap_or_default().to_owned(),
                    parsed.path.unwrap_or_default().to_owned(),
                    headers,
                );
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                bail!("request head too large");
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed in the middle of a request head");
            }
        };
        self.buf.drain(..head_len);
        let mut request = Request {
            method,
            path,
            headers,
            body: Vec::new(),
        };
        if request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let chunked = request
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let line = self.line().await?;
                let size_hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .with_context(|| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    while !self.line().await?.is_empty() {} // trailers
                    break;
                }
                if request.body.len() + size > MAX_BODY_BYTES {
                    bail!("request body too large");
                }
                let data = self.take(size).await?;
                request.body.extend_from_slice(&data);
                self.take(2).await?;
            }
        } else if let Some(len) = request.header("content-length") {
            let len: usize = len.trim().parse().context("bad content-length")?;
            if len > MAX_BODY_BYTES {
                bail!("request body too large");
            }
            request.body = self.take(len).await?;
        }
        Ok(Some(request))
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(io: S, conn_id: u64) -> Result<()> {
    let mut conn = Conn {
        io,
        buf: Vec::new(),
    };
    let mut seq = 0u64;
    while let Some(request) = conn.read_request().await? {
        seq += 1;
        let response = route(&request, format!("req_mock{conn_id:03}{seq:03}"));
        log_request(&request, &response, conn_id, seq, "http/1.1");
        write_response(&mut conn, response).await?;
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            break;
        }
    }
    conn.io.shutdown().await.ok();
    Ok(())
}

/// One JSON line per request served, on stdout. The SigV4 signature is logged so tests can
/// check that it never leaves the observer (this log is the test's, not the observer's).
fn log_request(request: &Request, response: &Response, conn_id: u64, seq: u64, version: &str) {
    let signature = request
        .header("authorization")
        .and_then(|auth| auth.split("Signature=").nth(1))
        .map(|sig| sig.trim().to_owned());
    let log = json!({
        "conn": conn_id, "seq": seq, "method": request.method, "path": request.path,
        "status": response.status, "request_bytes": request.body.len(),
        "response_id": response.log_id, "version": version, "sigv4_signature": signature,
    });
    println!("{log}");
}

enum Body {
    Full(Vec<u8>),
    /// Stream events (SSE, NDJSON lines or event-stream messages), each already framed.
    Events(Vec<Vec<u8>>),
}

#[derive(Clone, Copy, PartialEq)]
enum Pacing {
    /// One write per event.
    Normal,
    /// Each event in two writes, flushed separately with a pause between them.
    Split,
    /// All events in one write.
    Merge,
    /// One write per event, with a long pause between events.
    Slow,
    /// The first half of the events, then the connection (HTTP/1.1) or stream (HTTP/2) is
    /// aborted without the body's end.
    Cut,
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    pacing: Pacing,
    /// The response id, for the server's request log.
    log_id: Option<String>,
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

async fn write_response<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    response: Response,
) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ndate: Sun, 15 Jun 2025 12:00:00 GMT\r\nserver: llm-mock\r\nconnection: keep-alive\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match response.body {
        Body::Full(body) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            conn.send(&bytes).await
        }
        Body::Events(events) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            conn.send(head.as_bytes()).await?;
            for (data, pause) in event_writes(&events, response.pacing) {
                let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                conn.send(&chunk).await?;
                tokio::time::sleep(pause).await;
            }
            if response.pacing == Pacing::Cut {
                bail!("stream cut on purpose");
            }
            conn.send(b"0\r\n\r\n").await
        }
    }
}

/// The writes that carry `events` paced as asked, each with the pause that follows it.
fn event_writes(events: &[Vec<u8>], pacing: Pacing) -> Vec<(Vec<u8>, Duration)> {
    let none = Duration::ZERO;
    match pacing {
        Pacing::Merge => vec![(events.concat(), none)],
        Pacing::Normal => events.iter().map(|e| (e.clone(), none)).collect(),
        Pacing::Cut => events[..events.len() / 2]
            .iter()
            .map(|e| (e.clone(), Duration::from_millis(10)))
            .collect(),
        Pacing::Slow => {
            let pause = Duration::from_millis(scenario::SLOW_EVENT_INTERVAL_MS);
            events.iter().map(|e| (e.clone(), pause)).collect()
        }
        Pacing::Split => events
            .iter()
            .flat_map(|event| {
                // Text events split on a character boundary; binary ones anywhere.
                let mut mid = event.len() / 2;
                if let Ok(text) = std::str::from_utf8(event) {
                    while !text.is_char_boundary(mid) {
                        mid += 1;
                    }
                }
                [
                    (event[..mid].to_vec(), Duration::from_millis(30)),
                    (event[mid..].to_vec(), none),
                ]
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2

async fn serve_h2_connection<S>(io: S, conn_id: u64) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = h2::server::handshake(io)
        .await
        .context("HTTP/2 handshake")?;
    let mut seq = 0u64;
    // Accepting also drives the connection, so streams make progress while it waits.
    while let Some(accepted) = conn.accept().await {
        let (request, respond) = accepted?;
        seq += 1;
        tokio::spawn(async move {
            if let Err(e) = serve_h2_stream(request, respond, conn_id, seq).await {
                eprintln!("conn {conn_id} stream {seq}: {e:#}");
            }
        });
    }
    Ok(())
}

async fn serve_h2_stream(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    conn_id: u64,
    seq: u64,
) -> Result<()> {
    let (parts, mut body) = request.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            bail!("request body too large");
        }
        bytes.extend_from_slice(&chunk);
        body.flow_control().release_capacity(chunk.len())?;
    }
    let request = Request {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: bytes,
    };
    let response = route(&request, format!("req_mock{conn_id:03}{seq:03}"));
    log_request(&request, &response, conn_id, seq, "h2");
    let mut head = http::Response::builder()
        .status(response.status)
        .header("date", "Sun, 15 Jun 2025 12:00:00 GMT")
        .header("server", "llm-mock");
    for (name, value) in &response.headers {
        head = head.header(*name, value);
    }
    let mut send = respond.send_response(head.body(())?, false)?;
    match response.body {
        Body::Full(body) => send.send_data(body.into(), true)?,
        Body::Events(events) => {
            for (data, pause) in event_writes(&events, response.pacing) {
                send.send_data(data.into(), false)?;
                tokio::time::sleep(pause).await;
            }
            if response.pacing == Pacing::Cut {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return Ok(());
            }
            send.send_data(bytes::Bytes::new(), true)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Routing and the providers' formats

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
    Ollama,
}

type Handler = fn(&Call) -> Response;

/// The API a request path calls, and what the path itself says (Gemini and Bedrock name the
/// model and whether the reply streams in the URL).
struct Route {
    provider: Provider,
    handler: Handler,
    model: Option<String>,
    stream: Option<bool>,
}

impl Route {
    fn new(provider: Provider, handler: Handler) -> Route {
        Route {
            provider,
            handler,
            model: None,
            stream: None,
        }
    }
}

fn find_route(path: &str) -> Option<Route> {
    let route = match path {
        "/v1/chat/completions" => Route::new(Provider::OpenAi, openai_chat),
        "/v1/responses" => Route::new(Provider::OpenAi, openai_responses),
        "/v1/embeddings" => Route::new(Provider::OpenAi, openai_embeddings),
        "/v1/completions" => Route::new(Provider::OpenAi, openai_completions),
        "/v1/messages" => Route::new(Provider::Anthropic, anthropic_messages),
        _ => {
            return gemini::route(path)
                .or_else(|| bedrock::route(path))
                .or_else(|| ollama::route(path));
        }
    };
    Some(route)
}

/// `GET /files/MIB`: MIB MiB of bytes, the kind of non-LLM traffic an observer must not copy.
fn file_download(request: &Request, path: &str) -> Option<Response> {
    let mib: usize = path.strip_prefix("/files/")?.parse().ok()?;
    (request.method == "GET" && mib <= 1024).then(|| Response {
        status: 200,
        headers: vec![("content-type", "application/octet-stream".into())],
        body: Body::Full(vec![b'x'; mib << 20]),
        pacing: Pacing::Normal,
        log_id: None,
    })
}

/// What the mock model answers to one request.
struct Call<'a> {
    request: &'a Request,
    body: Value,
    provider: Provider,
    request_id: String,
    model: String,
    prompt: String,
    n: u64,
    stream: bool,
    include_usage: bool,
    input_tokens: u64,
    /// The tool the reply calls, if any: the first tool of the request, or `lookup` for `[tool]`.
    tool: Option<String>,
    /// The arguments of that call.
    tool_arguments: Value,
}

impl Call<'_> {
    fn response_model(&self) -> String {
        mock::response_model(&self.model)
    }

    fn reply(&self) -> String {
        mock::reply_text(&self.prompt)
    }

    fn has(&self, magic: &str) -> bool {
        self.prompt.contains(magic)
    }

    fn pacing(&self) -> Pacing {
        if self.has(scenario::SPLIT) {
            Pacing::Split
        } else if self.has(scenario::MERGE) {
            Pacing::Merge
        } else if self.has(scenario::SLOW) {
            Pacing::Slow
        } else if self.has(scenario::CUT) {
            Pacing::Cut
        } else {
            Pacing::Normal
        }
    }

    fn headers(&self, content_type: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![("content-type", content_type.to_owned())];
        if content_type.starts_with("text/event-stream") {
            h.push(("cache-control", "no-cache".into()));
        }
        match self.provider {
            Provider::OpenAi => h.extend([
                ("x-request-id", self.request_id.clone()),
                ("openai-organization", "org-mock".into()),
                ("openai-processing-ms", "42".into()),
                ("openai-version", "2020-10-01".into()),
                ("x-ratelimit-limit-requests", "500".into()),
                ("x-ratelimit-remaining-requests", "499".into()),
            ]),
            Provider::Anthropic => h.extend([
                ("request-id", self.request_id.clone()),
                ("anthropic-organization-id", "org-mock".into()),
                ("anthropic-ratelimit-requests-limit", "50".into()),
                ("anthropic-ratelimit-requests-remaining", "49".into()),
            ]),
            Provider::Gemini => h.extend([
                ("vary", "Origin, X-Origin, Referer".into()),
                ("server-timing", "gfet4t7; dur=412".into()),
            ]),
            Provider::Bedrock => h.push(("x-amzn-requestid", self.request_id.clone())),
            Provider::Ollama => {}
        }
        h
    }

    fn json(&self, value: Value, log_id: Option<String>) -> Response {
        let body = serde_json::to_vec(&value).expect("serialise");
        let gzip = self.has(scenario::GZIP)
            && self
                .request
                .header("accept-encoding")
                .is_some_and(|v| v.contains("gzip"));
        let content_type = match self.provider {
            Provider::Gemini => "application/json; charset=UTF-8",
            Provider::Ollama => "application/json; charset=utf-8",
            _ => "application/json",
        };
        let mut headers = self.headers(content_type);
        let body = if gzip {
            headers.push(("content-encoding", "gzip".into()));
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&body).expect("gzip");
            enc.finish().expect("gzip")
        } else {
            body
        };
        Response {
            status: 200,
            headers,
            body: Body::Full(body),
            pacing: Pacing::Normal,
            log_id,
        }
    }

    /// SSE response: `(event name, data)` pairs; OpenAI chat/completions omit the event line.
    fn events(&self, events: Vec<(Option<&str>, String)>, log_id: Option<String>) -> Response {
        let events = events
            .into_iter()
            .map(|(name, data)| match name {
                Some(name) => format!("event: {name}\ndata: {data}\n\n"),
                None => format!("data: {data}\n\n"),
            })
            .map(String::into_bytes)
            .collect();
        self.stream_of(
            "text/event-stream; charset=utf-8",
            Body::Events(events),
            log_id,
        )
    }

    /// A streamed response of already framed events.
    fn stream_of(&self, content_type: &str, body: Body, log_id: Option<String>) -> Response {
        Response {
            status: 200,
            headers: self.headers(content_type),
            body,
            pacing: self.pacing(),
            log_id,
        }
    }

    fn rate_limited(&self) -> Response {
        let message = match self.provider {
            Provider::OpenAi => format!(
                "Rate limit reached for {} in organization org-mock on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 2s.",
                self.model
            ),
            Provider::Anthropic => "This request would exceed the rate limit for your organization of 50 requests per minute.".into(),
            Provider::Gemini => "Resource has been exhausted (e.g. check quota).".into(),
            Provider::Bedrock => "Too many requests, please wait before trying again.".into(),
            Provider::Ollama => "too many requests, please try again later".into(),
        };
        let mut headers = match self.provider {
            Provider::OpenAi => vec![
                ("x-ratelimit-remaining-requests", "0".to_owned()),
                ("x-ratelimit-reset-requests", "2s".into()),
            ],
            Provider::Anthropic => vec![
                ("anthropic-ratelimit-requests-remaining", "0".to_owned()),
                (
                    "anthropic-ratelimit-requests-reset",
                    "2025-06-15T12:00:02Z".into(),
                ),
            ],
            _ => Vec::new(),
        };
        headers.push(("retry-after", "2".into()));
        if matches!(self.provider, Provider::OpenAi | Provider::Anthropic) {
            headers.push(("x-should-retry", "true".into()));
        }
        failure(
            self.provider,
            Failure::RateLimited,
            &message,
            &self.request_id,
            headers,
        )
    }

    fn usage_openai(&self, output_tokens: u64) -> Value {
        json!({
            "prompt_tokens": self.input_tokens, "completion_tokens": output_tokens,
            "total_tokens": self.input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }
}

/// The ways a request fails, each answered in the provider's own error format.
#[derive(Clone, Copy, PartialEq)]
enum Failure {
    BadRequest,
    Unauthorised,
    NotFound,
    RateLimited,
    ServerError,
}

impl Failure {
    fn status(self, provider: Provider) -> u16 {
        match self {
            Failure::BadRequest => 400,
            // AWS answers a bad signature with 403.
            Failure::Unauthorised if provider == Provider::Bedrock => 403,
            Failure::Unauthorised => 401,
            Failure::NotFound => 404,
            Failure::RateLimited => 429,
            Failure::ServerError => 500,
        }
    }

    /// The provider's name for the failure (error type, status or AWS exception).
    fn kind(self, provider: Provider) -> &'static str {
        use Failure::*;
        match (provider, self) {
            (Provider::OpenAi, RateLimited) => "requests",
            (Provider::OpenAi, ServerError) => "server_error",
            (Provider::OpenAi, _) => "invalid_request_error",
            (Provider::Anthropic, BadRequest) => "invalid_request_error",
            (Provider::Anthropic, Unauthorised) => "authentication_error",
            (Provider::Anthropic, NotFound) => "not_found_error",
            (Provider::Anthropic, RateLimited) => "rate_limit_error",
            (Provider::Anthropic, ServerError) => "api_error",
            (Provider::Gemini, BadRequest) => "INVALID_ARGUMENT",
            (Provider::Gemini, Unauthorised) => "UNAUTHENTICATED",
            (Provider::Gemini, NotFound) => "NOT_FOUND",
            (Provider::Gemini, RateLimited) => "RESOURCE_EXHAUSTED",
            (Provider::Gemini, ServerError) => "INTERNAL",
            (Provider::Bedrock, BadRequest) => "ValidationException",
            (Provider::Bedrock, Unauthorised) => "UnrecognizedClientException",
            (Provider::Bedrock, NotFound) => "ResourceNotFoundException",
            (Provider::Bedrock, RateLimited) => "ThrottlingException",
            (Provider::Bedrock, ServerError) => "InternalServerException",
            (Provider::Ollama, _) => "",
        }
    }
}

/// An error response in the provider's format, with `extra` headers.
fn failure(
    provider: Provider,
    failure: Failure,
    message: &str,
    request_id: &str,
    mut headers: Vec<(&'static str, String)>,
) -> Response {
    let status = failure.status(provider);
    let kind = failure.kind(provider);
    let body = match provider {
        Provider::OpenAi => {
            let code = (failure == Failure::RateLimited).then_some("rate_limit_exceeded");
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Provider::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})
        }
        Provider::Gemini => {
            let mut error = json!({"code": status, "message": message, "status": kind});
            if failure == Failure::RateLimited {
                error["details"] = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]);
            }
            json!({ "error": error })
        }
        // AWS names the exception in a header; the body has only the message.
        Provider::Bedrock => {
            headers.push((
                "x-amzn-errortype",
                format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            ));
            json!({ "message": message })
        }
        Provider::Ollama => json!({ "error": message }),
    };
    let id_header = match provider {
        Provider::OpenAi => Some("x-request-id"),
        Provider::Anthropic => Some("request-id"),
        Provider::Bedrock => Some("x-amzn-requestid"),
        Provider::Gemini | Provider::Ollama => None,
    };
    headers.push(("content-type", "application/json".into()));
    if let Some(name) = id_header {
        headers.push((name, request_id.to_owned()));
    }
    Response {
        status,
        headers,
        body: Body::Full(serde_json::to_vec(&body).expect("serialise")),
        pacing: Pacing::Normal,
        log_id: None,
    }
}

fn authorised(provider: Provider, request: &Request) -> bool {
    let bearer = || request.header("authorization") == Some(&format!("Bearer {CANARY_API_KEY}"));
    match provider {
        Provider::OpenAi => bearer(),
        // The Anthropic API takes `x-api-key`; recent SDKs send `Authorization: Bearer`.
        Provider::Anthropic => request.header("x-api-key") == Some(CANARY_API_KEY) || bearer(),
        Provider::Gemini => {
            let in_query = request.path.split_once('?').is_some_and(|(_, query)| {
                query
                    .split('&')
                    .any(|kv| kv == format!("key={CANARY_API_KEY}"))
            });
            request.header("x-goog-api-key") == Some(CANARY_API_KEY) || in_query
        }
        // A signature is not checked, only that the request is signed with the test's
        // session token (which holds the canary, so the observer must redact it).
        Provider::Bedrock => {
            request
                .header("authorization")
                .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential="))
                && request
                    .header("x-amz-security-token")
                    .is_some_and(|t| t.contains(CANARY_API_KEY))
        }
        // Ollama has no authentication.
        Provider::Ollama => true,
    }
}

fn route(request: &Request, request_id: String) -> Response {
    let path = request.path.split('?').next().unwrap_or("");
    if let Some(download) = file_download(request, path) {
        return download;
    }
    let Some(route) = find_route(path) else {
        let msg = format!("Unknown request URL: {} {path}", request.method);
        let provider = if path.starts_with("/api/") {
            Provider::Ollama
        } else {
            Provider::OpenAi
        };
        return failure(provider, Failure::NotFound, &msg, &request_id, Vec::new());
    };
    let provider = route.provider;
    let fail = |kind: Failure, msg: &str| failure(provider, kind, msg, &request_id, Vec::new());
    if request.method != "POST" {
        let msg = format!("{} is not allowed on {path}", request.method);
        return fail(Failure::NotFound, &msg);
    }
    if !authorised(provider, request) {
        return fail(Failure::Unauthorised, "Incorrect API key provided.");
    }
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("We could not parse the JSON body of your request: {e}");
            return fail(Failure::BadRequest, &msg);
        }
    };
    let prompt = mock::prompt_of(&body);
    let (tool, tool_arguments) = match mock::tool_call(&body, &prompt) {
        Some((name, arguments)) => (Some(name), arguments),
        None => (None, Value::Null),
    };
    let model = route
        .model
        .clone()
        .or_else(|| body["model"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    // Ollama streams unless told not to; the others only when asked.
    let stream_by_default = provider == Provider::Ollama;
    let call = Call {
        request,
        provider,
        n: next_id(),
        stream: route
            .stream
            .unwrap_or_else(|| body["stream"].as_bool().unwrap_or(stream_by_default)),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        input_tokens: mock::input_tokens(&body),
        request_id: request_id.clone(),
        model,
        prompt,
        tool,
        tool_arguments,
        body,
    };
    if call.model.starts_with(mock::MISSING_MODEL_PREFIX) {
        let msg = format!("model \"{}\" not found, try pulling it first", call.model);
        return fail(Failure::NotFound, &msg);
    }
    if call.has(scenario::RATE_LIMIT) {
        return call.rate_limited();
    }
    if call.has(scenario::SERVER_ERROR) {
        return fail(
            Failure::ServerError,
            "The server had an error while processing your request.",
        );
    }
    (route.handler)(&call)
}

/// An SSE event payload: `{"type": name, ...data}` (the type first, as the providers send it).
fn typed(name: &str, data: Value) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("type".into(), json!(name));
    object.extend(data.as_object().cloned().unwrap_or_default());
    Value::Object(object)
}

fn openai_chat(c: &Call) -> Response {
    let id = format!("chatcmpl-mock{:06}", c.n);
    let model = c.response_model();
    let reply = c.reply();
    let tool = c.tool.as_ref().map(|name| {
        let args = c.tool_arguments.to_string();
        (format!("call_mock{:06}", c.n), name.clone(), args)
    });
    let (output_tokens, finish) = match &tool {
        Some((_, _, args)) => (mock::output_tokens(args), "tool_calls"),
        None => (mock::output_tokens(&reply), "stop"),
    };
    if !c.stream {
        let message = match &tool {
            Some((call_id, name, args)) => json!({"role": "assistant", "content": null,
                "tool_calls": [{"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": args}}],
                "refusal": null, "annotations": []}),
            None => {
                json!({"role": "assistant", "content": reply, "refusal": null, "annotations": []})
            }
        };
        return c.json(
            json!({"id": id, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": c.usage_openai(output_tokens), "service_tier": "default",
                "system_fingerprint": "fp_mock"}),
            Some(id),
        );
    }
    let chunk = |choices: Value| {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "service_tier": "default", "system_fingerprint": "fp_mock",
            "choices": choices});
        if c.include_usage {
            v["usage"] = Value::Null;
        }
        (None, v.to_string())
    };
    let delta = |delta: Value, finish: Value| {
        chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]))
    };
    let mut events = Vec::new();
    match &tool {
        Some((call_id, name, args)) => {
            events.push(delta(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                    "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}],
                    "refusal": null}),
                Value::Null,
            ));
            for frag in mock::argument_fragments(args) {
                events.push(delta(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}),
                    Value::Null,
                ));
            }
        }
        None => {
            events.push(delta(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            for piece in mock::deltas(&reply) {
                events.push(delta(json!({"content": piece}), Value::Null));
            }
        }
    }
    events.push(delta(json!({}), json!(finish)));
    if c.include_usage {
        let (_, mut last) = chunk(json!([]));
        let mut v: Value = serde_json::from_str(&last).expect("json");
        v["usage"] = c.usage_openai(output_tokens);
        last = v.to_string();
        events.push((None, last));
    }
    events.push((None, "[DONE]".to_owned()));
    c.events(events, Some(id))
}

fn openai_completions(c: &Call) -> Response {
    let id = format!("cmpl-mock{:06}", c.n);
    let model = c.response_model();
    let reply = c.reply();
    let usage = c.usage_openai(mock::output_tokens(&reply));
    let body = |choices: Value| {
        json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
            "system_fingerprint": "fp_mock", "choices": choices})
    };
    if !c.stream {
        let mut v =
            body(json!([{"text": reply, "index": 0, "logprobs": null, "finish_reason": "stop"}]));
        v["usage"] = usage;
        return c.json(v, Some(id));
    }
    let choice = |text: &str, finish: Value| {
        (
            None,
            body(json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]))
                .to_string(),
        )
    };
    let mut events: Vec<_> = mock::deltas(&reply)
        .iter()
        .map(|piece| choice(piece, Value::Null))
        .collect();
    events.push(choice("", json!("stop")));
    if c.include_usage {
        let mut v = body(json!([]));
        v["usage"] = usage;
        events.push((None, v.to_string()));
    }
    events.push((None, "[DONE]".to_owned()));
    c.events(events, Some(id))
}

fn openai_embeddings(c: &Call) -> Response {
    let inputs: Vec<String> = match &c.body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        other => vec![other.to_string()],
    };
    let base64 = c.body["encoding_format"].as_str() == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let vector = mock::embedding(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    // Embedding responses carry no id and echo the requested model as is.
    c.json(
        json!({"object": "list", "data": data, "model": c.model,
            "usage": {"prompt_tokens": c.input_tokens, "total_tokens": c.input_tokens}}),
        None,
    )
}

fn openai_responses(c: &Call) -> Response {
    let id = format!("resp_mock{:06}", c.n);
    let item_id = format!("msg_mock{:06}", c.n);
    let reply = c.reply();
    let output_tokens = mock::output_tokens(&reply);
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": CREATED, "status": status,
            "background": false, "error": null, "incomplete_details": null,
            "instructions": c.body.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": c.body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": c.response_model(), "output": output, "parallel_tool_calls": true,
            "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
            "service_tier": "default", "store": true,
            "temperature": c.body.get("temperature").cloned().unwrap_or(json!(1.0)),
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {}})
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    let item = |status: &str, content: Value| json!({"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content});
    let usage = json!({"input_tokens": c.input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": c.input_tokens + output_tokens});
    let done = response(
        "completed",
        json!([item("completed", json!([part(&reply)]))]),
        usage,
    );
    if !c.stream {
        return c.json(done, Some(id));
    }
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut push = |name: &'static str, data: Value| {
        let mut data = typed(name, data);
        data["sequence_number"] = json!(seq);
        seq += 1;
        events.push((Some(name), data.to_string()));
    };
    let in_progress = response("in_progress", json!([]), Value::Null);
    push("response.created", json!({"response": in_progress}));
    push("response.in_progress", json!({"response": in_progress}));
    push(
        "response.output_item.added",
        json!({"output_index": 0, "item": item("in_progress", json!([]))}),
    );
    let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut v = at.clone();
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    };
    push(
        "response.content_part.added",
        with(json!({"part": part("")})),
    );
    for piece in mock::deltas(&reply) {
        push(
            "response.output_text.delta",
            with(json!({"delta": piece, "logprobs": []})),
        );
    }
    push(
        "response.output_text.done",
        with(json!({"text": reply, "logprobs": []})),
    );
    push(
        "response.content_part.done",
        with(json!({"part": part(&reply)})),
    );
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": item("completed", json!([part(&reply)]))}),
    );
    push("response.completed", json!({"response": done}));
    c.events(events, Some(id))
}

fn anthropic_messages(c: &Call) -> Response {
    let id = format!("msg_mock{:06}", c.n);
    let model = c.response_model();
    // Content blocks: (text) or (preamble text, tool_use).
    let tool = c.tool.as_ref().map(|name| {
        (
            format!("toolu_mock{:06}", c.n),
            name.clone(),
            c.tool_arguments.clone(),
        )
    });
    let text = match &tool {
        Some((_, name, _)) => mock::tool_preamble(name),
        None => c.reply(),
    };
    let output_tokens = mock::output_tokens(&text)
        + tool
            .as_ref()
            .map_or(0, |(_, _, args)| mock::output_tokens(&args.to_string()));
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let usage = |output_tokens: u64| {
        json!({"input_tokens": c.input_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": output_tokens, "service_tier": "standard"})
    };
    if !c.stream {
        let mut content = vec![json!({"type": "text", "text": text})];
        if let Some((tool_id, name, input)) = &tool {
            content.push(json!({"type": "tool_use", "id": tool_id, "name": name, "input": input}));
        }
        return c.json(
            json!({"id": id, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": null,
                "usage": usage(output_tokens)}),
            Some(id),
        );
    }
    let mut events = Vec::new();
    let mut push = |name: &'static str, data: Value| {
        events.push((Some(name), typed(name, data).to_string()));
    };
    push(
        "message_start",
        json!({"message": {"id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(1)}}),
    );
    push(
        "content_block_start",
        json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    push("ping", json!({}));
    for piece in mock::deltas(&text) {
        push(
            "content_block_delta",
            json!({"index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    push("content_block_stop", json!({"index": 0}));
    if let Some((tool_id, name, input)) = &tool {
        push(
            "content_block_start",
            json!({"index": 1, "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}),
        );
        for frag in mock::argument_fragments(&input.to_string()) {
            push(
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": frag}}),
            );
        }
        push("content_block_stop", json!({"index": 1}));
    }
    push(
        "message_delta",
        json!({"delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}),
    );
    push("message_stop", json!({}));
    c.events(events, Some(id))
}
