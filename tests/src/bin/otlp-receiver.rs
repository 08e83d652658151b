//! A real OTLP trace receiver for the fleet test, on the published OpenTelemetry protobufs
//! (opentelemetry-proto): OTLP/gRPC (tonic) and OTLP/HTTP with protobuf bodies (axum), each in
//! plaintext and over TLS requiring a client certificate, gzip accepted on both. A request without
//! the header `x-fleet-token: TOKEN` is refused (gRPC UNAUTHENTICATED, HTTP 401: errors an
//! exporter must not retry).
//!
//! Usage: `otlp-receiver --dir DIR --token TOKEN [--grpc-port N] [--grpcs-port N]
//! [--http-port N] [--https-port N]`.
//! The TLS files are made once in DIR (`ca.pem`, `server.pem`/`.key`, `client.pem`/`.key`) and
//! reused by a restarted receiver. The first line on stdout is
//! `listening grpc=ADDR grpcs=ADDR http=ADDR https=ADDR`; then one JSON line per accepted
//! request, written before the answer: `{"request": N, "protocol": "grpc"|"grpcs"|"http"|"https",
//! "compressed": BOOL,
//! "spans": [{"span_id", "trace_id", "name", "host", "service"}]}` (hex ids, the resource's
//! `host.name` and `service.name`).
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, Result, bail};
use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value},
};
use prost::Message;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, rustls, server::TlsStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    codec::CompressionEncoding,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

#[derive(Clone)]
struct Receiver {
    protocol: &'static str,
    token: Arc<String>,
    requests: Arc<AtomicU64>,
}

impl Receiver {
    fn authorised(&self, token: Option<&str>) -> bool {
        token == Some(self.token.as_str())
    }

    /// One line for an accepted request, flushed before the receiver answers it.
    fn record(&self, compressed: bool, request: &ExportTraceServiceRequest) {
        let mut spans = Vec::new();
        for resource_spans in &request.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes[..]);
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                spans.push(json!({
                    "span_id": hex(&span.span_id),
                    "trace_id": hex(&span.trace_id),
                    "name": span.name,
                    "host": text(resource, "host.name"),
                    "service": text(resource, "service.name"),
                }));
            }
        }
        let line = json!({
            "request": self.requests.fetch_add(1, Ordering::Relaxed),
            "protocol": self.protocol,
            "compressed": compressed,
            "spans": spans,
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(attributes: &[KeyValue], key: &str) -> Value {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(text) => Some(Value::from(text.as_str())),
            _ => None,
        })
        .unwrap_or(Value::Null)
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let metadata = request.metadata();
        let token = metadata.get("x-fleet-token").and_then(|v| v.to_str().ok());
        if !self.authorised(token) {
            return Err(tonic::Status::unauthenticated(
                "x-fleet-token missing or wrong",
            ));
        }
        let compressed = metadata.get("grpc-encoding").is_some_and(|v| v == "gzip");
        self.record(compressed, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn export_http(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let token = headers.get("x-fleet-token").and_then(|v| v.to_str().ok());
    if !receiver.authorised(token) {
        return (
            StatusCode::UNAUTHORIZED,
            b"x-fleet-token missing or wrong".to_vec(),
        );
    }
    let compressed = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let mut protobuf = Vec::new();
    if compressed {
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut protobuf)
            .is_err()
        {
            return (StatusCode::BAD_REQUEST, b"not gzip".to_vec());
        }
    } else {
        protobuf = body.to_vec();
    }
    let Ok(request) = ExportTraceServiceRequest::decode(&protobuf[..]) else {
        return (
            StatusCode::BAD_REQUEST,
            b"not an ExportTraceServiceRequest".to_vec(),
        );
    };
    receiver.record(compressed, &request);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// The TLS files in `dir`, made the first time: a CA, a server certificate for 127.0.0.1 and a
/// client certificate, both signed by it.
fn tls_files(dir: &Path) -> Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    if dir.join("ca.pem").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "observer-e2e OTLP CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate()?;
        Ok((params.signed_by(&key, &ca)?.pem(), key.serialize_pem()))
    };
    let (server, server_key) = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client, client_key) = leaf("observer", ExtendedKeyUsagePurpose::ClientAuth)?;
    for (file, pem) in [
        ("server.pem", server),
        ("server.key", server_key),
        ("client.pem", client),
        ("client.key", client_key),
        // Last: its presence says the others are there.
        ("ca.pem", ca.pem()),
    ] {
        std::fs::write(dir.join(file), pem)?;
    }
    Ok(())
}

/// HTTPS requiring a client certificate signed by the CA: the handshake made at accept.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    fn new(tcp: TcpListener, dir: &Path) -> Result<TlsListener> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(dir.join("ca.pem"))?)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            match tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(error)) => eprintln!("TLS handshake from {addr}: {error}"),
                Err(_) => eprintln!("TLS handshake from {addr}: timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

async fn bind(port: u16) -> Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let usage = "usage: otlp-receiver --dir DIR --token TOKEN [--grpc-port N] [--grpcs-port N] \
                 [--http-port N] [--https-port N]";
    let (mut dir, mut token) = (None, None);
    let [mut grpc_port, mut grpcs_port, mut http_port, mut https_port] = [0u16; 4];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; {usage}"))
        };
        match arg.as_str() {
            "--dir" => dir = Some(std::path::PathBuf::from(value()?)),
            "--token" => token = Some(value()?),
            "--grpc-port" => grpc_port = value()?.parse()?,
            "--grpcs-port" => grpcs_port = value()?.parse()?,
            "--http-port" => http_port = value()?.parse()?,
            "--https-port" => https_port = value()?.parse()?,
            other => bail!("unknown argument {other:?}; {usage}"),
        }
    }
    let (Some(dir), Some(token)) = (dir, token) else {
        bail!("{usage}");
    };
    tls_files(&dir)?;
    let token = Arc::new(token);
    let requests = Arc::new(AtomicU64::new(0));
    let receiver = |protocol| Receiver {
        protocol,
        token: token.clone(),
        requests: requests.clone(),
    };

    let (grpc, grpcs) = (bind(grpc_port).await?, bind(grpcs_port).await?);
    let (http, https) = (bind(http_port).await?, bind(https_port).await?);
    let addresses: Vec<SocketAddr> = [&grpc, &grpcs, &http, &https]
        .iter()
        .map(|listener| listener.local_addr())
        .collect::<std::io::Result<_>>()?;
    let https = TlsListener::new(https, &dir)?;

    let service = |protocol| {
        TraceServiceServer::new(receiver(protocol)).accept_compressed(CompressionEncoding::Gzip)
    };
    let plain = Server::builder()
        .add_service(service("grpc"))
        .serve_with_incoming(TcpListenerStream::new(grpc));
    let read = |file: &str| std::fs::read(dir.join(file));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.pem")?, read("server.key")?))
        .client_ca_root(Certificate::from_pem(read("ca.pem")?));
    let secure = Server::builder()
        .tls_config(tls)?
        .add_service(service("grpcs"))
        .serve_with_incoming(TcpListenerStream::new(grpcs));
    let app = |protocol| {
        Router::new()
            .route("/v1/traces", post(export_http))
            .with_state(receiver(protocol))
    };
    let http = axum::serve(http, app("http"));
    let https = axum::serve(https, app("https"));

    println!(
        "listening grpc={} grpcs={} http={} https={}",
        addresses[0], addresses[1], addresses[2], addresses[3]
    );
    std::io::stdout().flush()?;
    tokio::select! {
        result = plain => result.context("the gRPC server stopped")?,
        result = secure => result.context("the gRPC TLS server stopped")?,
        result = http => result.context("the HTTP server stopped")?,
        result = https => result.context("the HTTPS server stopped")?,
    }
    Ok(())
}
