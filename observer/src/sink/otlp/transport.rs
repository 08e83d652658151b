//! The wire: OTLP/HTTP with protobuf bodies (ureq) or OTLP/gRPC (tonic), each with TLS (the
//! public roots or a custom CA, and a client certificate), gzip and extra headers. Every
//! answer, partial successes included, becomes an [`Outcome`] by the specification's rules.
use std::{
    io::Write,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use flate2::{Compression as GzLevel, write::GzEncoder};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_client::MetricsServiceClient,
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_client::TraceServiceClient,
    },
};
use prost::Message;
use tonic::{
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt;

use super::retry::{Outcome, grpc_retryable, http_retryable, parse_retry_after};
use crate::config::{Compression, Protocol, Target, TlsFiles};

/// What one export request carries.
pub enum Request {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// A response body or an error message is read up to this much.
const MAX_RESPONSE_BYTES: u64 = 64 << 10;
/// A receiver's message is logged up to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

pub struct Transport {
    url: String,
    wire: Wire,
}

enum Wire {
    Http(Http),
    Grpc(Grpc),
}

impl Transport {
    /// A transport to `target`; fails on unreadable certificate files or bad headers, so that
    /// a mistake shows at start-up rather than at the first export.
    pub fn new(target: &Target) -> anyhow::Result<Transport> {
        let wire = match target.protocol {
            Protocol::HttpProtobuf => Wire::Http(Http::new(target)?),
            Protocol::Grpc => Wire::Grpc(Grpc::new(target)?),
        };
        Ok(Transport {
            url: target.url.clone(),
            wire,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn send(&mut self, request: Request) -> Outcome {
        match &mut self.wire {
            Wire::Http(http) => http.send(&request),
            Wire::Grpc(grpc) => grpc.send(request),
        }
    }
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the OTLP {what} {}", path.display()))
}

struct Http {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    gzip: bool,
}

impl Http {
    fn new(target: &Target) -> anyhow::Result<Http> {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(target.timeout))
            .http_status_as_error(false)
            .tls_config(http_tls(&target.tls)?)
            .build();
        Ok(Http {
            agent: ureq::Agent::new_with_config(config),
            url: target.url.clone(),
            headers: target.headers.clone().into_iter().collect(),
            gzip: target.compression == Compression::Gzip,
        })
    }

    fn send(&self, request: &Request) -> Outcome {
        let protobuf = match request {
            Request::Traces(request) => request.encode_to_vec(),
            Request::Metrics(request) => request.encode_to_vec(),
        };
        let mut post = self
            .agent
            .post(&self.url)
            .header("content-type", "application/x-protobuf");
        let body = if self.gzip {
            post = post.header("content-encoding", "gzip");
            match gzip(&protobuf) {
                Ok(body) => body,
                Err(error) => {
                    return Outcome::Refused {
                        reason: format!("compressing the request failed: {error}"),
                    };
                }
            }
        } else {
            protobuf
        };
        for (name, value) in &self.headers {
            post = post.header(name, value);
        }
        let mut response = match post.send(&body[..]) {
            Ok(response) => response,
            // No connection, a timeout, a TLS failure: the receiver may be back soon.
            Err(error) => {
                return Outcome::Retry {
                    reason: error.to_string(),
                    after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .unwrap_or_default();
        if (200..300).contains(&status) {
            let (rejected, message) = match request {
                Request::Traces(_) => ExportTraceServiceResponse::decode(&body[..])
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_spans, p.error_message)),
                Request::Metrics(_) => ExportMetricsServiceResponse::decode(&body[..])
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_data_points, p.error_message)),
            }
            .unwrap_or_default();
            return Outcome::Accepted {
                rejected: u64::try_from(rejected).unwrap_or(0),
                message: shorten(&message),
            };
        }
        let reason = match error_message(&body) {
            message if message.is_empty() => format!("HTTP {status}"),
            message => format!("HTTP {status}: {message}"),
        };
        if http_retryable(status) {
            Outcome::Retry {
                reason,
                after: retry_after,
            }
        } else {
            Outcome::Refused { reason }
        }
    }
}

fn http_tls(files: &TlsFiles) -> anyhow::Result<ureq::tls::TlsConfig> {
    use ureq::tls::{ClientCert, PrivateKey, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &files.ca {
        let certificates = pem_certificates(&read_file(ca, "CA certificate")?)
            .with_context(|| format!("in the OTLP CA certificate {}", ca.display()))?;
        tls = tls.root_certs(RootCerts::new_with_certs(&certificates));
    }
    if let (Some(certificate), Some(key)) = (&files.client_certificate, &files.client_key) {
        let chain = pem_certificates(&read_file(certificate, "client certificate")?)
            .with_context(|| format!("in the OTLP client certificate {}", certificate.display()))?;
        let key = PrivateKey::from_pem(&read_file(key, "client key")?)
            .map(|key| key.to_owned())
            .with_context(|| format!("in the OTLP client key {}", key.display()))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(tls.build())
}

fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let ureq::tls::PemItem::Certificate(certificate) = item? {
            certificates.push(certificate);
        }
    }
    if certificates.is_empty() {
        bail!("no PEM certificate found");
    }
    Ok(certificates)
}

/// The message of a failed HTTP export: the body's google.rpc.Status, else its text.
fn error_message(body: &[u8]) -> String {
    match tonic_types::Status::decode(body) {
        Ok(status) if !status.message.is_empty() => shorten(&status.message),
        _ => shorten(&String::from_utf8_lossy(body)),
    }
}

/// A receiver's message made one short printable line.
fn shorten(message: &str) -> String {
    message
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), GzLevel::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

struct Grpc {
    /// tonic is asynchronous; the exporting thread runs each call to completion here.
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    metadata: MetadataMap,
    gzip: bool,
    timeout: Duration,
}

impl Grpc {
    fn new(target: &Target) -> anyhow::Result<Grpc> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut endpoint = Endpoint::from_shared(target.url.clone())
            .with_context(|| format!("the OTLP endpoint {} is not a gRPC target", target.url))?
            .timeout(target.timeout)
            .connect_timeout(target.timeout);
        if target.url.starts_with("https://") {
            endpoint = endpoint.tls_config(grpc_tls(&target.tls)?)?;
        }
        // Connected at the first call, and again after each failure: the receiver may be down.
        let channel = {
            let _runtime = runtime.enter();
            endpoint.connect_lazy()
        };
        let mut metadata = MetadataMap::new();
        for (name, value) in &target.headers {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .with_context(|| format!("the OTLP header {name} is not a gRPC metadata key"))?;
            let value = MetadataValue::try_from(value.as_str())
                .with_context(|| format!("the OTLP header {name} has a value gRPC cannot carry"))?;
            metadata.insert(key, value);
        }
        Ok(Grpc {
            runtime,
            channel,
            metadata,
            gzip: target.compression == Compression::Gzip,
            timeout: target.timeout,
        })
    }

    /// `message` with the headers and the deadline.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        request
    }

    fn send(&mut self, request: Request) -> Outcome {
        let channel = self.channel.clone();
        let encoding = self.gzip.then_some(CompressionEncoding::Gzip);
        let result = match request {
            Request::Traces(message) => {
                let mut client =
                    TraceServiceClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
                if let Some(encoding) = encoding {
                    client = client.send_compressed(encoding);
                }
                self.runtime
                    .block_on(client.export(self.request(message)))
                    .map(|response| {
                        response
                            .into_inner()
                            .partial_success
                            .map(|p| (p.rejected_spans, p.error_message))
                    })
            }
            Request::Metrics(message) => {
                let mut client =
                    MetricsServiceClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
                if let Some(encoding) = encoding {
                    client = client.send_compressed(encoding);
                }
                self.runtime
                    .block_on(client.export(self.request(message)))
                    .map(|response| {
                        response
                            .into_inner()
                            .partial_success
                            .map(|p| (p.rejected_data_points, p.error_message))
                    })
            }
        };
        match result {
            Ok(partial) => {
                let (rejected, message) = partial.unwrap_or_default();
                Outcome::Accepted {
                    rejected: u64::try_from(rejected).unwrap_or(0),
                    message: shorten(&message),
                }
            }
            Err(status) => {
                let retry_info = status.get_details_retry_info();
                let reason = format!("gRPC {:?}: {}", status.code(), shorten(status.message()));
                // A status tonic made from an error of its own (a connection lost, reset or
                // refused) is no answer from the receiver, whatever its code: try again.
                let on_the_way = std::error::Error::source(&status).is_some();
                if on_the_way || grpc_retryable(status.code(), retry_info.is_some()) {
                    Outcome::Retry {
                        reason,
                        after: retry_info.and_then(|info| info.retry_delay),
                    }
                } else {
                    Outcome::Refused { reason }
                }
            }
        }
    }
}

fn grpc_tls(files: &TlsFiles) -> anyhow::Result<ClientTlsConfig> {
    let mut tls = ClientTlsConfig::new();
    tls = match &files.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read_file(ca, "CA certificate")?)),
        None => tls.with_webpki_roots(),
    };
    if let (Some(certificate), Some(key)) = (&files.client_certificate, &files.client_key) {
        tls = tls.identity(Identity::from_pem(
            read_file(certificate, "client certificate")?,
            read_file(key, "client key")?,
        ));
    }
    Ok(tls)
}
