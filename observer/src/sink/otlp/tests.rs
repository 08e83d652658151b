use std::{
    collections::VecDeque,
    io::Read,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as HttpStatus},
    response::IntoResponse,
    routing::post,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value as V},
    trace::v1::{span::SpanKind, status::StatusCode},
};
use prost::Message;
use serde_json::{Value, json};

use super::{encode::hex_bytes, *};
use crate::{
    config::{Env, OtlpConfig, QueueLimits},
    sink::Sink,
    store::tests::span,
};

/// One answer of a test receiver.
#[derive(Clone, Copy)]
enum Answer {
    Accept,
    /// Accept, rejecting this many spans (a partial success).
    Partial(i64),
    /// HTTP status with an optional Retry-After; for gRPC, the code for that status.
    Fail(u16, Option<&'static str>),
}

/// What a test receiver saw: every attempt's time and metadata, and the accepted requests.
#[derive(Clone, Default)]
struct Seen {
    attempts: Arc<Mutex<Vec<(Instant, HeaderMap)>>>,
    accepted: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// Answers, in order; Accept once used up.
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

impl Seen {
    fn answering(answers: &[Answer]) -> Seen {
        let seen = Seen::default();
        seen.answers.lock().unwrap().extend(answers.iter().cloned());
        seen
    }

    /// Records an attempt and picks its answer.
    fn attempt(&self, headers: HeaderMap) -> Answer {
        self.attempts
            .lock()
            .unwrap()
            .push((Instant::now(), headers));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Accept)
    }

    fn attempts(&self) -> usize {
        self.attempts.lock().unwrap().len()
    }

    /// The span ids accepted, in order.
    fn span_ids(&self) -> Vec<Vec<u8>> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.span_id.clone())
            .collect()
    }
}

async fn receive_http(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let answer = seen.attempt(headers.clone());
    let accept = |rejected: i64| {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let mut protobuf = Vec::new();
        if headers.get("content-encoding").is_some_and(|e| e == "gzip") {
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut protobuf)
                .unwrap();
        } else {
            protobuf = body.to_vec();
        }
        let request = ExportTraceServiceRequest::decode(&protobuf[..]).unwrap();
        seen.accepted.lock().unwrap().push(request);
        let response = ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "span name too long".into(),
            }),
        };
        (HttpStatus::OK, HeaderMap::new(), response.encode_to_vec())
    };
    match answer {
        Answer::Accept => accept(0),
        Answer::Partial(rejected) => accept(rejected),
        Answer::Fail(status, retry_after) => {
            let mut headers = HeaderMap::new();
            if let Some(after) = retry_after {
                headers.insert("retry-after", after.parse().unwrap());
            }
            let body = tonic_types::Status {
                code: 3,
                message: format!("receiver says {status}"),
                details: Vec::new(),
            };
            (
                HttpStatus::from_u16(status).unwrap(),
                headers,
                body.encode_to_vec(),
            )
        }
    }
}

/// Runs `serve` on a thread of its own with a listener on a loopback port; returns the port.
pub(super) fn serve_on_loopback<F>(
    serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
) -> u16
where
    F: Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            serve(tokio::net::TcpListener::from_std(listener).unwrap()).await;
        });
    });
    port
}

/// An OTLP/HTTP receiver on a loopback port: its base URL.
fn http_receiver(seen: &Seen) -> String {
    let app = Router::new()
        .route("/v1/traces", post(receive_http))
        .with_state(seen.clone());
    let port = serve_on_loopback(|listener| async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://127.0.0.1:{port}")
}

#[tonic::async_trait]
impl TraceService for Seen {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        let partial = |rejected: i64| ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "span name too long".into(),
            }),
        };
        match self.attempt(headers) {
            Answer::Accept => {
                self.accepted.lock().unwrap().push(request.into_inner());
                Ok(tonic::Response::new(partial(0)))
            }
            Answer::Partial(rejected) => {
                self.accepted.lock().unwrap().push(request.into_inner());
                Ok(tonic::Response::new(partial(rejected)))
            }
            Answer::Fail(status, retry_after) => {
                use tonic_types::{ErrorDetails, StatusExt};
                let code = match status {
                    503 => tonic::Code::Unavailable,
                    429 => tonic::Code::ResourceExhausted,
                    _ => tonic::Code::InvalidArgument,
                };
                let message = format!("receiver says {status}");
                Err(match retry_after {
                    Some(seconds) => tonic::Status::with_error_details(
                        code,
                        message,
                        ErrorDetails::with_retry_info(Some(Duration::from_secs(
                            seconds.parse().unwrap(),
                        ))),
                    ),
                    None => tonic::Status::new(code, message),
                })
            }
        }
    }
}

/// An OTLP/gRPC receiver (gzip accepted) on a loopback port: its URL.
fn grpc_receiver(seen: &Seen) -> String {
    let service = TraceServiceServer::new(seen.clone())
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let port = serve_on_loopback(|listener| async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    format!("http://127.0.0.1:{port}")
}

fn export(url: &str, protocol: Protocol, more: OtlpConfig) -> OtlpExport {
    let configured = OtlpConfig {
        endpoint: Some(url.to_owned()),
        protocol: Some(protocol),
        ..more
    };
    OtlpConfig::resolve(Some(&configured), &Env(&|_| None))
        .unwrap()
        .unwrap()
}

fn fast() -> Batching {
    Batching {
        max_spans: 512,
        max_delay: Duration::from_millis(20),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
        },
        flush_timeout: Duration::from_secs(10),
    }
}

fn memory_sink(export: &OtlpExport, batching: Batching) -> OtlpSink {
    export.traces_sink_with(None, batching).unwrap().unwrap()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a V> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn spans(count: usize) -> Vec<Span> {
    (0..count)
        .map(|i| span("a", &format!("{:x}", i + 1), None, 1, json!({})))
        .collect()
}

#[test]
fn exports_spans_grouped_by_process_with_typed_attributes() {
    let seen = Seen::default();
    let url = http_receiver(&seen);
    let more = OtlpConfig {
        headers: [("authorization".into(), "Bearer secret".into())].into(),
        service_name: Some("fleet".into()),
        resource_attributes: [("host.name".into(), "node-7".into())].into(),
        ..OtlpConfig::default()
    };
    let mut sink = memory_sink(
        &export(&format!("{url}/"), Protocol::HttpProtobuf, more),
        fast(),
    );
    let chat = span(
        "a",
        "1",
        None,
        5,
        json!({
            "gen_ai.request.temperature": 0.5,
            "gen_ai.request.stream": true,
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
        }),
    );
    let container = "ab".repeat(32);
    let failed = span(
        "a",
        "2",
        Some("1"),
        4,
        json!({"error.type": "429", "process.pid": 7, "container.id": container}),
    );
    sink.write(&chat).unwrap();
    sink.write(&failed).unwrap();
    sink.flush().unwrap();

    let accepted = seen.accepted.lock().unwrap();
    assert_eq!(accepted.len(), 1);
    let headers = &seen.attempts.lock().unwrap()[0].1;
    assert_eq!(headers["authorization"], "Bearer secret");
    assert_eq!(headers["content-encoding"], "gzip");
    let request = &accepted[0];
    assert_eq!(request.resource_spans.len(), 2, "one ResourceSpans per pid");
    let by_pid = |pid: i64| {
        request
            .resource_spans
            .iter()
            .find(|r| {
                let resource = &r.resource.as_ref().unwrap().attributes;
                attribute(resource, "process.pid") == Some(&V::IntValue(pid))
            })
            .unwrap()
    };
    let resource = &by_pid(4242).resource.as_ref().unwrap().attributes;
    let text = |value: &str| Some(V::StringValue(value.into()));
    assert_eq!(attribute(resource, "service.name").cloned(), text("fleet"));
    assert_eq!(attribute(resource, "host.name").cloned(), text("node-7"));
    assert_eq!(attribute(resource, "os.type").cloned(), text("linux"));
    assert_eq!(
        attribute(resource, "process.executable.name").cloned(),
        text("python3")
    );
    assert_eq!(attribute(resource, "container.id"), None);
    let other = &by_pid(7).resource.as_ref().unwrap().attributes;
    assert_eq!(attribute(other, "container.id").cloned(), text(&container));

    let exported = &by_pid(4242).scope_spans[0].spans[0];
    assert_eq!(exported.trace_id, hex_bytes(&chat.trace_id));
    assert_eq!(exported.trace_id.len(), 16);
    assert_eq!(exported.span_id.len(), 8);
    assert_eq!(exported.kind, SpanKind::Client as i32);
    assert_eq!(exported.name, "chat gpt-4o");
    assert_eq!(exported.start_time_unix_nano, chat.start_time_unix_nano);
    assert!(exported.status.is_none());
    let attrs = &exported.attributes;
    assert_eq!(
        attribute(attrs, "gen_ai.usage.input_tokens"),
        Some(&V::IntValue(100))
    );
    assert_eq!(
        attribute(attrs, "gen_ai.request.temperature"),
        Some(&V::DoubleValue(0.5))
    );
    assert_eq!(
        attribute(attrs, "gen_ai.request.stream"),
        Some(&V::BoolValue(true))
    );
    let Some(V::ArrayValue(reasons)) = attribute(attrs, "gen_ai.response.finish_reasons") else {
        panic!("finish reasons should be an array");
    };
    assert_eq!(reasons.values[0].value, text("stop"));
    let Some(V::StringValue(messages)) = attribute(attrs, "gen_ai.input.messages") else {
        panic!("messages should be a JSON string");
    };
    assert_eq!(
        serde_json::from_str::<Value>(messages).unwrap()[0]["role"],
        "user"
    );

    let error = &by_pid(7).scope_spans[0].spans[0];
    assert_eq!(
        error.parent_span_id,
        hex_bytes(failed.parent_span_id.as_ref().unwrap())
    );
    let status = error.status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "429")
    );
    assert_eq!(sink.health().exported, 2);
}

#[test]
fn exports_kind_and_links() {
    let mut root = span("a", "1", None, 5, json!({"process.pid": 7}));
    root.kind = crate::span::SpanKind::Internal;
    let mut call = span("a", "2", Some("1"), 4, json!({"process.pid": 7}));
    call.links.push(crate::span::SpanLink {
        trace_id: call.trace_id.clone(),
        span_id: "0".repeat(15) + "9",
        attributes: json!({"observer.link.reason": "conversation_prefix"})
            .as_object()
            .cloned()
            .unwrap(),
    });
    let encoded = [EncodedSpan::new(&root), EncodedSpan::new(&call)];
    let request = encode::export_request(&encoded, &BaseResource::new(&Default::default()));
    let spans = &request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans[0].kind, SpanKind::Internal as i32);
    assert_eq!(spans[1].kind, SpanKind::Client as i32);
    let link = &spans[1].links[0];
    assert_eq!(link.span_id, hex_bytes(&("0".repeat(15) + "9")));
    assert_eq!(
        attribute(&link.attributes, "observer.link.reason"),
        Some(&V::StringValue("conversation_prefix".into()))
    );
    assert_eq!(hex_bytes("0aff"), [0x0a, 0xff]);
    assert!(hex_bytes("xyz1").is_empty());
}

/// Sends two spans through a receiver answering `answers` first; what it saw, and the health.
fn deliver_through(protocol: Protocol, answers: &[Answer]) -> (Seen, ExportHealth) {
    let seen = Seen::answering(answers);
    let url = match protocol {
        Protocol::HttpProtobuf => http_receiver(&seen),
        Protocol::Grpc => grpc_receiver(&seen),
    };
    let more = OtlpConfig {
        headers: [("x-api-key".into(), "k1".into())].into(),
        ..OtlpConfig::default()
    };
    let mut sink = memory_sink(&export(&url, protocol, more), fast());
    for span in spans(2) {
        sink.write(&span).unwrap();
    }
    sink.flush().unwrap();
    let health = sink.health();
    (seen, health)
}

#[test]
fn retries_throttling_and_unavailability_honouring_the_receivers_wait() {
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let answers = [Answer::Fail(503, None), Answer::Fail(429, Some("1"))];
        let (seen, health) = deliver_through(protocol, &answers);
        let attempts = seen.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 3, "{protocol:?}");
        assert_eq!(seen.span_ids().len(), 2, "{protocol:?}");
        assert!(
            attempts[2].0 - attempts[1].0 >= Duration::from_secs(1),
            "{protocol:?}: the receiver asked for a second"
        );
        assert_eq!(attempts[0].1["x-api-key"], "k1", "{protocol:?}");
        if protocol == Protocol::Grpc {
            assert_eq!(attempts[0].1["grpc-encoding"], "gzip");
        }
        assert_eq!(
            health,
            ExportHealth {
                exported: 2,
                ..ExportHealth::default()
            }
        );
    }
}

#[test]
fn refusals_are_not_retried_and_their_spans_are_counted() {
    // HTTP: any other status, 500 included; gRPC: INVALID_ARGUMENT, and RESOURCE_EXHAUSTED
    // without a RetryInfo.
    for (protocol, status) in [
        (Protocol::HttpProtobuf, 400),
        (Protocol::HttpProtobuf, 500),
        (Protocol::Grpc, 400),
        (Protocol::Grpc, 429),
    ] {
        let (seen, health) = deliver_through(protocol, &[Answer::Fail(status, None)]);
        assert_eq!(seen.attempts(), 1, "{protocol:?} {status}");
        assert!(seen.accepted.lock().unwrap().is_empty());
        assert_eq!(
            health,
            ExportHealth {
                rejected: 2,
                ..ExportHealth::default()
            },
            "{protocol:?} {status}"
        );
    }
}

#[test]
fn a_partial_success_counts_the_rejected_spans() {
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let (seen, health) = deliver_through(protocol, &[Answer::Partial(1)]);
        assert_eq!(seen.attempts(), 1);
        assert_eq!(
            health,
            ExportHealth {
                exported: 1,
                rejected: 1,
                ..ExportHealth::default()
            },
            "{protocol:?}"
        );
    }
}

#[test]
fn the_memory_queue_is_bounded_in_spans_and_bytes() {
    let one = EncodedSpan::new(&spans(1)[0]);
    let mut by_count = SpanQueue::new(QueueLimits {
        spans: 3,
        bytes: 1 << 20,
    });
    let mut by_bytes = SpanQueue::new(QueueLimits {
        spans: 100,
        bytes: one.size() * 2,
    });
    for queue in [&mut by_count, &mut by_bytes] {
        let kept = spans(10)
            .iter()
            .filter(|span| queue.push(EncodedSpan::new(span)))
            .count();
        assert!(kept == 3 || kept == 2, "{kept}");
    }
    assert_eq!((by_count.len(), by_bytes.len()), (3, 2));
}

#[test]
fn spans_that_find_the_queue_full_are_dropped_and_counted() {
    let seen = Seen::answering(&[Answer::Fail(503, None); 1000]);
    let url = http_receiver(&seen);
    let more = OtlpConfig {
        queue_max_spans: Some(5),
        retry_max_elapsed_secs: Some(3600),
        ..OtlpConfig::default()
    };
    let mut batching = fast();
    batching.flush_timeout = Duration::from_millis(100);
    let mut sink = memory_sink(&export(&url, Protocol::HttpProtobuf, more), batching);
    for span in spans(50) {
        sink.write(&span).unwrap();
    }
    let queue = sink.queue().unwrap();
    assert_eq!((queue.dropped, queue.depth), (45, 5));
    // Still retrying when the flush gives up; what is left is lost at exit, and counted.
    sink.flush().unwrap();
    let queue = sink.queue().unwrap();
    assert_eq!((queue.dropped, queue.depth), (45, 0));
    assert_eq!(queue.export.unwrap().expired, 5);
    assert!(seen.accepted.lock().unwrap().is_empty());
}

#[test]
fn a_batch_is_given_up_after_the_maximum_elapsed_time() {
    let seen = Seen::answering(&[Answer::Fail(503, None); 1000]);
    let url = http_receiver(&seen);
    // Zero seconds: the first retry already runs over.
    let more = OtlpConfig {
        retry_max_elapsed_secs: Some(0),
        ..OtlpConfig::default()
    };
    let mut sink = memory_sink(&export(&url, Protocol::HttpProtobuf, more), fast());
    for span in spans(3) {
        sink.write(&span).unwrap();
    }
    sink.flush().unwrap();
    assert_eq!(
        sink.health(),
        ExportHealth {
            expired: 3,
            ..ExportHealth::default()
        }
    );
    assert_eq!(seen.attempts(), 1);
}

/// A store sink and a durable OTLP sink on it, as the daemon builds them.
struct Durable {
    store: Box<dyn Sink>,
    otlp: OtlpSink,
}

impl Durable {
    fn start(store: &StoreConfig, export: &OtlpExport, batching: Batching) -> Durable {
        Durable {
            store: Box::new(store.build().unwrap()),
            otlp: export
                .traces_sink_with(Some(store), batching)
                .unwrap()
                .unwrap(),
        }
    }

    fn write(&mut self, spans: &[Span]) {
        for span in spans {
            self.store.write(span).unwrap();
            self.otlp.write(span).unwrap();
        }
    }

    fn flush(&mut self) {
        self.store.flush().unwrap();
        self.otlp.flush().unwrap();
    }
}

fn store_config(dir: &tempfile::TempDir) -> StoreConfig {
    StoreConfig {
        path: dir.path().join("observer.db"),
        ..StoreConfig::default()
    }
}

#[test]
fn with_the_store_an_outage_and_a_restart_lose_nothing_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_config(&dir);
    // The receiver is away for the first fifty attempts.
    let seen = Seen::answering(&[Answer::Fail(503, None); 50]);
    let url = http_receiver(&seen);
    let export = export(&url, Protocol::HttpProtobuf, OtlpConfig::default());
    let mut batching = fast();
    batching.max_spans = 4;
    batching.flush_timeout = Duration::from_millis(200);
    let all = spans(10);

    // The first run ends while the receiver is still away: nothing lost, all waits.
    let mut first = Durable::start(&store, &export, batching);
    first.write(&all[..6]);
    first.flush();
    let queue = first.otlp.queue().unwrap();
    assert_eq!((queue.depth, queue.export.unwrap().exported), (6, 0));
    drop(first);
    assert!(seen.span_ids().is_empty());

    // The next run sends what the first left, then its own, each once.
    batching.flush_timeout = Duration::from_secs(30);
    let mut second = Durable::start(&store, &export, batching);
    second.write(&all[6..]);
    second.flush();
    let expected: Vec<Vec<u8>> = all.iter().map(|s| hex_bytes(&s.span_id)).collect();
    assert_eq!(seen.span_ids(), expected);
    let queue = second.otlp.queue().unwrap();
    assert_eq!((queue.depth, queue.export.unwrap().exported), (0, 10));
    drop(second);

    // A third run finds nothing new to send.
    let mut third = Durable::start(&store, &export, batching);
    third.flush();
    assert_eq!(seen.span_ids().len(), 10);
}

#[test]
fn with_the_store_a_refused_batch_is_passed_over_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_config(&dir);
    let seen = Seen::answering(&[Answer::Fail(400, None)]);
    let url = grpc_receiver(&seen);
    let mut batching = fast();
    batching.max_spans = 2;
    let mut durable = Durable::start(
        &store,
        &export(&url, Protocol::Grpc, OtlpConfig::default()),
        batching,
    );
    durable.write(&spans(4));
    durable.flush();
    assert_eq!(seen.attempts(), 2);
    assert_eq!(
        durable.otlp.health(),
        ExportHealth {
            exported: 2,
            rejected: 2,
            ..ExportHealth::default()
        }
    );
}

#[test]
fn a_connection_lost_on_the_way_is_retried_not_refused() {
    // A receiver that reads a little, then drops the connection: no answer at all.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let _ = stream.read(&mut [0; 64]);
        }
    });
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let target = export(&url, protocol, OtlpConfig::default())
            .traces
            .unwrap();
        let outcome = Transport::new(&target)
            .unwrap()
            .send(Request::Traces(Default::default()));
        assert!(
            matches!(outcome, Outcome::Retry { .. }),
            "{protocol:?}: {outcome:?}"
        );
    }
}
