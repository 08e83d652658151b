use std::sync::Mutex;

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{common::v1::any_value::Value as V, metrics::v1::Metric};
use prost::Message;
use serde_json::json;

use super::*;
use crate::{
    config::{Env, OtlpConfig},
    health::{ExportHealth, PipelineTotals, QueueHealth},
    store::tests::span,
};

fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    request.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} in {request:#?}"))
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            V::StringValue(text) => Some(text.as_str()),
            _ => None,
        }
    })
}

#[test]
fn the_prometheus_metrics_become_otlp_metrics_named_by_the_conventions() {
    let metrics = Metrics::new();
    // Two calls of 100 input tokens, 20 output; one failed.
    metrics.record_span(&span("a", "1", None, 1, json!({})));
    metrics.record_span(&span("a", "2", None, 1, json!({"error.type": "429"})));
    let totals = PipelineTotals {
        events: 12,
        bytes: 4096,
        parse_failures: 0,
        spans: 2,
        given_up: crate::health::given_up(
            &Default::default(),
            &Default::default(),
            &Default::default(),
        ),
        http: Default::default(),
        reassembly: Default::default(),
    };
    let otlp = QueueHealth {
        name: "otlp",
        depth: 3,
        dropped: 0,
        export: Some(ExportHealth {
            exported: 40,
            ..ExportHealth::default()
        }),
    };
    metrics.update_pipeline(totals, &[otlp]);
    let resource = BaseResource::new(&[("service.name".into(), "fleet".into())].into());
    let request = metrics_request(&metrics.render(), &resource, 7);

    let attributes = &request.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(attribute(attributes, "service.name"), Some("fleet"));

    let tokens = metric(&request, "gen_ai.client.token.usage");
    assert_eq!(tokens.unit, "{token}");
    let Some(Data::Histogram(histogram)) = &tokens.data else {
        panic!("token usage should be a histogram: {tokens:#?}");
    };
    assert_eq!(
        histogram.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let input = histogram
        .data_points
        .iter()
        .find(|p| {
            attribute(&p.attributes, "gen_ai.token.type") == Some("input")
                && attribute(&p.attributes, "error.type").is_none()
        })
        .unwrap();
    assert_eq!(
        attribute(&input.attributes, "gen_ai.provider.name"),
        Some("openai")
    );
    assert_eq!(
        attribute(&input.attributes, "gen_ai.request.model"),
        Some("gpt-4o")
    );
    assert_eq!((input.count, input.sum), (2, Some(200.0)));
    assert_eq!(input.start_time_unix_nano, 7);
    // 100 tokens fall in the bucket (64, 256]: per-bucket counts, one more than the bounds.
    assert_eq!(input.bucket_counts.len(), input.explicit_bounds.len() + 1);
    let bucket = input
        .explicit_bounds
        .iter()
        .position(|b| *b == 256.0)
        .unwrap();
    assert_eq!(input.bucket_counts[bucket], 2);
    assert_eq!(input.bucket_counts.iter().sum::<u64>(), 2);

    let duration = metric(&request, "gen_ai.client.operation.duration");
    assert_eq!(duration.unit, "s");
    let Some(Data::Sum(calls)) = &metric(&request, "gen_ai_client_calls").data else {
        panic!("calls should be a sum");
    };
    assert!(calls.is_monotonic);
    let failed = calls
        .data_points
        .iter()
        .find(|p| attribute(&p.attributes, "error.type") == Some("429"))
        .unwrap();
    assert_eq!(failed.value, Some(Number::AsDouble(1.0)));

    let Some(Data::Sum(events)) = &metric(&request, "observer_events").data else {
        panic!("events should be a sum");
    };
    assert_eq!(events.data_points[0].value, Some(Number::AsDouble(12.0)));
    let Some(Data::Sum(exported)) = &metric(&request, "observer_export_spans").data else {
        panic!("exported spans should be a sum");
    };
    let point = exported
        .data_points
        .iter()
        .find(|p| attribute(&p.attributes, "outcome") == Some("exported"))
        .unwrap();
    assert_eq!(point.value, Some(Number::AsDouble(40.0)));
    let Some(Data::Gauge(depth)) = &metric(&request, "observer_sink_queue_depth").data else {
        panic!("the queue depth should be a gauge");
    };
    assert_eq!(
        attribute(&depth.data_points[0].attributes, "sink"),
        Some("otlp")
    );
}

#[test]
fn reads_escaped_label_values() {
    let sample = parse_sample(r#"x_total{a="q\"uote",b="back\\slash",c="new\nline"} 3"#).unwrap();
    assert_eq!(sample.name, "x_total");
    assert_eq!(
        sample.labels,
        [
            ("a".to_owned(), "q\"uote".to_owned()),
            ("b".to_owned(), "back\\slash".to_owned()),
            ("c".to_owned(), "new\nline".to_owned())
        ]
    );
    assert_eq!(sample.value, 3.0);
    assert_eq!(parse_sample("y +Inf").unwrap().value, f64::INFINITY);
    assert!(parse_sample(r#"z{a="unterminated} 1"#).is_none());
}

#[test]
fn metrics_are_exported_once_more_when_the_exporter_stops() {
    type Received = Arc<Mutex<Vec<ExportMetricsServiceRequest>>>;
    async fn receive(State(received): State<Received>, body: Bytes) {
        let mut protobuf = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut protobuf)
            .unwrap();
        let request = ExportMetricsServiceRequest::decode(&protobuf[..]).unwrap();
        received.lock().unwrap().push(request);
    }
    let received = Received::default();
    let app = Router::new()
        .route("/v1/metrics", post(receive))
        .with_state(received.clone());
    let port = super::super::tests::serve_on_loopback(|listener| async move {
        axum::serve(listener, app).await.unwrap();
    });
    let configured = OtlpConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        metrics: Some(true),
        metrics_interval_secs: Some(3600),
        ..OtlpConfig::default()
    };
    let export = OtlpConfig::resolve(Some(&configured), &Env(&|_| None))
        .unwrap()
        .unwrap();
    let metrics = Metrics::new();
    let exporter = export.start_metrics(metrics.clone()).unwrap().unwrap();
    metrics.record_span(&span("a", "1", None, 1, json!({})));
    drop(exporter);
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1, "the last export, at once");
    metric(&received[0], "gen_ai.client.token.usage");
}
