use std::{
    collections::VecDeque,
    io::Read,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use serde_json::json;

use super::*;
use crate::{sink::Sink, store::tests::span};

/// What the test receiver saw: each POST's headers and decoded body.
#[derive(Clone, Default)]
struct Seen {
    attempts: Arc<Mutex<u32>>,
    accepted: Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>,
    /// Statuses to answer with, in order; 200 once used up.
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

async fn receive(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    *seen.attempts.lock().unwrap() += 1;
    let status = seen.statuses.lock().unwrap().pop_front().unwrap_or(200);
    if status == 200 {
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let mut protobuf = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut protobuf)
            .unwrap();
        let request = ExportTraceServiceRequest::decode(&protobuf[..]).unwrap();
        seen.accepted.lock().unwrap().push((headers, request));
    }
    axum::http::StatusCode::from_u16(status).unwrap()
}

/// An OTLP/HTTP receiver on a loopback port, answering `statuses` first.
fn start_receiver(statuses: &[u16]) -> (String, Seen) {
    let seen = Seen::default();
    seen.statuses.lock().unwrap().extend(statuses);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(seen.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (url, seen)
}

fn endpoint(url: &str) -> OtlpConfig {
    OtlpConfig {
        endpoint: url.to_string(),
        ..OtlpConfig::default()
    }
}

fn fast_delivery() -> Delivery {
    let mut delivery = Delivery::default();
    delivery.retry.first_backoff = Duration::from_millis(20);
    delivery.batch.max_delay = Duration::from_millis(50);
    delivery
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a V> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[test]
fn exports_spans_grouped_by_process_with_typed_attributes() {
    let (url, seen) = start_receiver(&[]);
    let config = OtlpConfig {
        headers: [("authorization".into(), "Bearer secret".into())].into(),
        service_name: Some("fleet".into()),
        ..endpoint(&format!("{url}/"))
    };
    let mut sink = otlp_sink(&config, fast_delivery()).unwrap();
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
    let failed = span(
        "a",
        "2",
        Some("1"),
        4,
        json!({"error.type": "429", "process.pid": 7}),
    );
    sink.write(&chat).unwrap();
    sink.write(&failed).unwrap();
    sink.flush().unwrap();

    let accepted = seen.accepted.lock().unwrap();
    assert_eq!(accepted.len(), 1);
    let (headers, request) = &accepted[0];
    assert_eq!(headers["authorization"], "Bearer secret");
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
    assert_eq!(
        attribute(resource, "service.name"),
        Some(&V::StringValue("fleet".into()))
    );
    assert_eq!(
        attribute(resource, "process.executable.name"),
        Some(&V::StringValue("python3".into()))
    );
    assert!(attribute(resource, "host.name").is_some());

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
    assert_eq!(attribute(attrs, "process.pid"), Some(&V::IntValue(4242)));
    let Some(V::ArrayValue(reasons)) = attribute(attrs, "gen_ai.response.finish_reasons") else {
        panic!("finish reasons should be an array");
    };
    assert_eq!(reasons.values[0].value, Some(V::StringValue("stop".into())));
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
}

#[test]
fn retries_when_the_receiver_is_busy() {
    let (url, seen) = start_receiver(&[503, 429]);
    let mut sink = otlp_sink(&endpoint(&url), fast_delivery()).unwrap();
    sink.write(&span("a", "1", None, 1, json!({}))).unwrap();
    sink.flush().unwrap();
    assert_eq!(*seen.attempts.lock().unwrap(), 3);
    assert_eq!(seen.accepted.lock().unwrap().len(), 1);
}

#[test]
fn gives_up_on_a_refused_batch_without_retrying() {
    let (url, seen) = start_receiver(&[400]);
    let mut sink = otlp_sink(&endpoint(&url), fast_delivery()).unwrap();
    sink.write(&span("a", "1", None, 1, json!({}))).unwrap();
    sink.flush().unwrap();
    assert_eq!(*seen.attempts.lock().unwrap(), 1);
    assert!(seen.accepted.lock().unwrap().is_empty());
}

#[test]
fn counts_spans_dropped_while_the_receiver_is_down() {
    let (url, _seen) = start_receiver(&[503; 100]);
    let mut delivery = fast_delivery();
    delivery.batch = BatchPolicy {
        queue: 2,
        max_spans: 1,
        max_delay: Duration::from_millis(10),
    };
    delivery.retry = RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
    };
    let mut sink = otlp_sink(&endpoint(&url), delivery).unwrap();
    for i in 0..50 {
        sink.write(&span("a", &format!("{i:x}"), None, 1, json!({})))
            .unwrap();
    }
    assert!(sink.dropped() >= 40, "dropped {}", sink.dropped());
}

#[test]
fn builds_the_traces_url() {
    assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
    assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
    assert_eq!(
        traces_url("http://c:4318/v1/traces"),
        "http://c:4318/v1/traces"
    );
    assert_eq!(hex_bytes("0aff"), [0x0a, 0xff]);
    assert!(hex_bytes("xyz1").is_empty());
}

#[test]
fn finds_the_container_in_a_cgroup_path() {
    let id = "4f1d9a7e".repeat(8);
    for cgroup in [
        format!("0::/system.slice/docker-{id}.scope\n"),
        format!("12:memory:/docker/{id}\n0::/\n"),
        format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope\n"),
        format!("0::/kubepods/besteffort/pod0b2f/{id}\n"),
    ] {
        assert_eq!(container_id_in(&cgroup), Some(id.clone()), "{cgroup}");
    }
    assert_eq!(container_id_in("0::/user.slice/session-3.scope\n"), None);
    assert_eq!(
        container_id_in("4:memory:/process_api/7e72139267527873\n"),
        None
    );
}

#[test]
fn exports_kind_links_and_the_container() {
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
    let id = "ab".repeat(32);
    let containers = HashMap::from([(7, id.clone())]);
    let request = export_request(&[root, call], "observer", "host", &containers);
    let resource = &request.resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(
        attribute(resource, "container.id"),
        Some(&V::StringValue(id))
    );
    let spans = &request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans[0].kind, SpanKind::Internal as i32);
    assert_eq!(spans[1].kind, SpanKind::Client as i32);
    let link = &spans[1].links[0];
    assert_eq!(link.span_id, hex_bytes(&("0".repeat(15) + "9")));
    assert_eq!(
        attribute(&link.attributes, "observer.link.reason"),
        Some(&V::StringValue("conversation_prefix".into()))
    );
}
