use std::collections::HashMap;

use super::*;

/// Resolves `configured` against an environment of `vars` only.
fn resolve(
    configured: Option<OtlpConfig>,
    vars: &[(&str, &str)],
) -> anyhow::Result<Option<OtlpExport>> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    OtlpConfig::resolve(configured.as_ref(), &Env(&|name| vars.get(name).cloned()))
}

fn traces(configured: Option<OtlpConfig>, vars: &[(&str, &str)]) -> Target {
    resolve(configured, vars).unwrap().unwrap().traces.unwrap()
}

fn file(text: &str) -> OtlpConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn nothing_configured_means_no_export() {
    assert_eq!(resolve(None, &[]).unwrap(), None);
    assert_eq!(
        resolve(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).unwrap(),
        None,
        "an empty variable is unset"
    );
    let error = resolve(Some(file("service_name = \"s\"")), &[]).unwrap_err();
    assert!(
        error.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{error}"
    );
}

#[test]
fn the_general_endpoint_gets_the_signal_path_and_the_signal_endpoint_is_used_as_is() {
    let general = traces(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
    assert_eq!(general.url, "http://c:4318/v1/traces");
    assert_eq!(general.protocol, Protocol::HttpProtobuf);
    let with_path = traces(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c/otlp")]);
    assert_eq!(with_path.url, "https://c/otlp/v1/traces");
    let signal = traces(
        None,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
        ],
    );
    assert_eq!(signal.url, "http://c:4318/custom");
    let grpc = traces(
        None,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    assert_eq!(
        (grpc.url.as_str(), grpc.protocol),
        ("http://c:4317", Protocol::Grpc)
    );
    // A bare gRPC target is TLS unless said insecure.
    let bare = [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "c:4317"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
    ];
    assert_eq!(traces(None, &bare).url, "https://c:4317");
    let insecure = [bare[0], bare[1], ("OTEL_EXPORTER_OTLP_INSECURE", "true")];
    assert_eq!(traces(None, &insecure).url, "http://c:4317");
}

#[test]
fn the_file_wins_over_the_environment() {
    let configured = file(
        r#"
        endpoint = "http://file:4318"
        headers = { authorization = "Bearer file" }
        compression = "none"
        timeout_ms = 2500
        "#,
    );
    let environment = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://env:4318/v1/traces",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer env,x-tenant=t1",
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "700"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ];
    let target = traces(Some(configured), &environment);
    assert_eq!(
        target.url, "http://file:4318",
        "gRPC: the file's endpoint as is"
    );
    assert_eq!(
        target.protocol,
        Protocol::Grpc,
        "the file leaves it to the environment"
    );
    assert_eq!(
        target.headers,
        BTreeMap::from([
            ("authorization".into(), "Bearer file".into()),
            ("x-tenant".into(), "t1".into())
        ])
    );
    assert_eq!(target.compression, Compression::None);
    assert_eq!(target.timeout, Duration::from_millis(2500));
    let from_env = traces(None, &environment);
    assert_eq!(from_env.url, "http://env:4318/v1/traces");
    assert_eq!(from_env.compression, Compression::Gzip);
    assert_eq!(from_env.timeout, Duration::from_millis(700));
    assert_eq!(from_env.headers["authorization"], "Bearer env");
}

#[test]
fn the_signal_variables_replace_the_general_ones() {
    let target = traces(
        None,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/c.key"),
        ],
    );
    assert_eq!(target.headers, BTreeMap::from([("b".into(), "2".into())]));
    assert_eq!(target.protocol, Protocol::HttpProtobuf);
    assert_eq!(target.url, "http://c:4318/v1/traces");
    assert_eq!(
        target.tls,
        TlsFiles {
            ca: Some("/traces/ca.pem".into()),
            client_certificate: Some("/c.pem".into()),
            client_key: Some("/c.key".into()),
        }
    );
}

#[test]
fn headers_and_resource_attributes_are_percent_decoded_pairs() {
    let pairs = parse_pairs(
        "OTEL_EXPORTER_OTLP_HEADERS",
        " api-key = secret%3Dvalue , x-team=obs%2Cai ,",
    )
    .unwrap();
    assert_eq!(
        pairs,
        BTreeMap::from([
            ("api-key".into(), "secret=value".into()),
            ("x-team".into(), "obs,ai".into())
        ])
    );
    let error = parse_pairs("OTEL_RESOURCE_ATTRIBUTES", "host.name").unwrap_err();
    assert!(error.to_string().contains("key=value"), "{error}");
    assert!(parse_pairs("OTEL_RESOURCE_ATTRIBUTES", "=x").is_err());
}

#[test]
fn the_service_name_comes_from_the_flag_the_file_or_the_environment() {
    let environment = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,host.name=node-7,deployment.environment=prod",
        ),
    ];
    let resource =
        |configured, vars: &[(&str, &str)]| resolve(configured, vars).unwrap().unwrap().resource;
    let from_attributes = resource(None, &environment);
    assert_eq!(from_attributes["service.name"], "from-attributes");
    assert_eq!(from_attributes["host.name"], "node-7");
    assert_eq!(from_attributes["deployment.environment"], "prod");
    let mut with_service = environment.to_vec();
    with_service.push(("OTEL_SERVICE_NAME", "from-env"));
    assert_eq!(resource(None, &with_service)["service.name"], "from-env");
    let configured = file(
        r#"
        service_name = "from-file"
        resource_attributes = { "deployment.environment" = "staging" }
        "#,
    );
    let resource = resource(Some(configured), &with_service);
    assert_eq!(resource["service.name"], "from-file");
    assert_eq!(resource["deployment.environment"], "staging");
    assert_eq!(resource["host.name"], "node-7");
    let default = resolve(None, &environment[..1]).unwrap().unwrap().resource;
    assert_eq!(
        default,
        BTreeMap::from([("service.name".into(), "observer".into())])
    );
}

#[test]
fn refuses_values_it_cannot_honour() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    for (name, value, says) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "grpc or http/protobuf",
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "gzip or none"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/c.key", "needs its key"),
    ] {
        let error = resolve(None, &[endpoint, (name, value)])
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{name}={value}: {error}");
    }
    let error = resolve(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
    assert!(error.to_string().contains("http://"), "{error}");
}

#[test]
fn metrics_go_when_asked_to_their_own_path() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    assert_eq!(resolve(None, &[endpoint]).unwrap().unwrap().metrics, None);
    let asked = resolve(
        None,
        &[
            endpoint,
            ("OTEL_METRICS_EXPORTER", "prometheus,otlp"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
        ],
    )
    .unwrap()
    .unwrap()
    .metrics
    .unwrap();
    assert_eq!(asked.target.url, "http://c:4318/v1/metrics");
    assert_eq!(asked.interval, Duration::from_secs(15));
    // Only a metrics endpoint: metrics, no traces.
    let metrics_only = resolve(
        None,
        &[(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://m:4318/v1/metrics",
        )],
    )
    .unwrap()
    .unwrap();
    assert_eq!(metrics_only.traces, None);
    assert_eq!(
        metrics_only.metrics.unwrap().target.url,
        "http://m:4318/v1/metrics"
    );
    // The file's `metrics = false` wins over the environment; its `true` over its absence.
    let off = resolve(
        Some(file("metrics = false")),
        &[endpoint, ("OTEL_METRICS_EXPORTER", "otlp")],
    );
    assert_eq!(off.unwrap().unwrap().metrics, None);
    let on = resolve(
        Some(file(
            "endpoint = \"http://c:4318/v1/traces\"\nmetrics = true",
        )),
        &[],
    );
    let on = on.unwrap().unwrap();
    assert_eq!(on.metrics.unwrap().target.url, "http://c:4318/v1/metrics");
    assert_eq!(on.traces.unwrap().url, "http://c:4318/v1/traces");
}

#[test]
fn the_queue_and_retry_limits_have_defaults_and_settings() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    let default = resolve(None, &[endpoint]).unwrap().unwrap();
    assert_eq!(default.retry_max_elapsed, Duration::from_secs(300));
    assert_eq!(
        default.queue,
        QueueLimits {
            spans: 10_000,
            bytes: 64 << 20
        }
    );
    let configured = file("retry_max_elapsed_secs = 60\nqueue_max_spans = 5\nqueue_max_mb = 2");
    let set = resolve(Some(configured), &[endpoint]).unwrap().unwrap();
    assert_eq!(set.retry_max_elapsed, Duration::from_secs(60));
    assert_eq!(
        set.queue,
        QueueLimits {
            spans: 5,
            bytes: 2 << 20
        }
    );
}

#[test]
fn flags_over_the_file() {
    let configured = file(
        r#"endpoint = "http://c:4318"
headers = { a = "1", b = "2" }
service_name = "s""#,
    );
    let flags = OtlpFlags {
        endpoint: Some("http://d:4317".into()),
        headers: vec![("b".into(), "3".into()), ("c".into(), "4".into())],
        protocol: Some(Protocol::Grpc),
        metrics: true,
        ..OtlpFlags::default()
    };
    let otlp = flags.over(Some(configured.clone())).unwrap();
    assert_eq!(otlp.endpoint.as_deref(), Some("http://d:4317"));
    assert_eq!(
        otlp.headers,
        BTreeMap::from([
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
            ("c".into(), "4".into())
        ])
    );
    assert_eq!(otlp.service_name.as_deref(), Some("s"));
    assert_eq!(
        (otlp.protocol, otlp.metrics),
        (Some(Protocol::Grpc), Some(true))
    );
    assert_eq!(
        OtlpFlags::default().over(Some(configured.clone())),
        Some(configured)
    );
    assert_eq!(OtlpFlags::default().over(None), None);
}
