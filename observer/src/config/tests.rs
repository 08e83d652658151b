use super::*;

#[test]
fn the_shipped_example_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observer.toml");
    let config = Config::load(&example).unwrap();
    assert_eq!(
        config.store.retention().max_age,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(
        config.otlp, None,
        "OTLP is configured through the environment"
    );
    // The commented [otlp] example is a valid section once uncommented.
    let text = std::fs::read_to_string(example).unwrap();
    let section: String = text
        .lines()
        .skip_while(|line| *line != "# [otlp]")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| line.contains(" = "))
        .map(|line| format!("{line}\n"))
        .collect();
    let otlp: OtlpConfig = toml::from_str(&section).unwrap();
    assert_eq!(otlp.endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    assert_eq!(otlp.metrics, Some(false));
    assert_eq!(config.serve, ServeConfig::default());
}

#[test]
fn an_empty_file_means_the_defaults() {
    let config: Config = toml::from_str("").unwrap();
    assert_eq!(config, Config::default());
    assert!(config.store.enabled);
    assert_eq!(config.store.retention(), Retention::default());
}

#[test]
fn reads_each_section_and_refuses_unknown_keys() {
    let config: Config = toml::from_str(
        r#"
        filters = { comms = ["python3"] }
        store = { path = "/tmp/x.db", retention_days = 1, max_size_mb = 0 }
        otlp = { endpoint = "http://c:4318", headers = { authorization = "Bearer t" } }
        jsonl = { path = "/tmp/spans.jsonl" }
        "#,
    )
    .unwrap();
    assert_eq!(config.filters.comms, ["python3"]);
    assert_eq!(config.store.retention().max_bytes, None);
    let otlp = config.otlp.unwrap();
    assert_eq!(otlp.headers["authorization"], "Bearer t");
    assert_eq!(otlp.endpoint.as_deref(), Some("http://c:4318"));
    assert!(toml::from_str::<Config>("[otlp]\nendpoint_url = \"http://c\"").is_err());
    assert!(toml::from_str::<Config>("[store]\nretention = 3").is_err());
    assert!(toml::from_str::<Config>("[content]\nmode = \"everything\"").is_err());
    let config: Config = toml::from_str("[content]\nmode = \"redacted\"").unwrap();
    assert_eq!(config.content.mode, ContentMode::Redacted);
}

fn file(text: &str) -> Config {
    toml::from_str(text).unwrap()
}

fn output() -> OutputConfig {
    OutputConfig {
        path: "-".into(),
        format: None,
        quiet: false,
    }
}

#[test]
fn no_flags_leave_the_file_as_it_is() {
    let configured = file(
        r#"
        filters = { pids = [7], comms = ["node"] }
        store = { enabled = false, path = "/tmp/x.db", retention_days = 1, max_size_mb = 2 }
        otlp = { endpoint = "http://c:4318", service_name = "fleet" }
        jsonl = { path = "/tmp/spans.jsonl" }
        content = { mode = "none", max_string_bytes = 10 }
        cost = { prices = "/tmp/prices.toml" }
        metrics = { enabled = false, listen = "0.0.0.0:1" }
        "#,
    );
    let overridden = configured.clone().overridden_by(Flags::default()).unwrap();
    assert_eq!(overridden, configured);
}

#[test]
fn flags_win_over_the_file() {
    let configured = file(
        r#"
        filters = { pids = [7], comms = ["node"] }
        store = { path = "/tmp/x.db", retention_days = 1 }
        content = { mode = "none", max_string_bytes = 10 }
        metrics = { listen = "0.0.0.0:1" }
        "#,
    );
    let flags = Flags {
        pids: vec![8],
        store_enabled: Some(false),
        store_path: Some("/tmp/y.db".into()),
        max_size_mb: Some(5),
        jsonl: Some("/tmp/spans.jsonl".into()),
        content: ContentFlags {
            mode: Some(ContentMode::Redacted),
            prices: Some("/tmp/prices.toml".into()),
            ..ContentFlags::default()
        },
        metrics_enabled: Some(false),
        ..Flags::default()
    };
    let config = configured.overridden_by(flags).unwrap();
    assert_eq!(config.filters.pids, [8]);
    assert_eq!(config.filters.comms, ["node"], "not given: the file's");
    assert!(!config.store.enabled);
    assert_eq!(config.store.path, Path::new("/tmp/y.db"));
    assert_eq!(
        (config.store.retention_days, config.store.max_size_mb),
        (1, 5)
    );
    assert_eq!(config.jsonl.unwrap().path, Path::new("/tmp/spans.jsonl"));
    assert_eq!(config.content.mode, ContentMode::Redacted);
    assert_eq!(config.content.max_string_bytes, Some(10));
    assert_eq!(config.cost.prices.unwrap(), Path::new("/tmp/prices.toml"));
    assert!(!config.metrics.enabled);
    assert_eq!(config.metrics.listen, "0.0.0.0:1".parse().unwrap());
}

#[test]
fn a_store_path_or_metrics_address_leaves_them_off_when_the_file_turns_them_off() {
    let configured = file("store = { enabled = false }\nmetrics = { enabled = false }");
    let flags = Flags {
        store_path: Some("/tmp/y.db".into()),
        metrics_listen: Some("127.0.0.1:2".parse().unwrap()),
        ..Flags::default()
    };
    let config = configured.overridden_by(flags).unwrap();
    assert!(!config.store.enabled);
    assert!(!config.metrics.enabled);
}

#[test]
fn otlp_flags_alone_make_an_otlp_section() {
    let endpoint_only = Flags {
        otlp: OtlpFlags {
            endpoint: Some("http://d:4318".into()),
            ..OtlpFlags::default()
        },
        ..Flags::default()
    };
    let otlp = Config::default()
        .overridden_by(endpoint_only)
        .unwrap()
        .otlp
        .unwrap();
    assert_eq!(
        otlp,
        OtlpConfig {
            endpoint: Some("http://d:4318".into()),
            ..OtlpConfig::default()
        }
    );
}

#[test]
fn capture_and_replay_keep_no_store_and_serve_no_metrics_unless_asked() {
    let config = Config::with_output(output())
        .overridden_by(Flags::default())
        .unwrap();
    assert!(!config.store.enabled);
    assert!(!config.metrics.enabled);
    assert_eq!(config.otlp, None);
    let asked = Flags {
        store_enabled: Some(true),
        store_path: Some("/tmp/y.db".into()),
        metrics_enabled: Some(true),
        metrics_listen: Some("127.0.0.1:2".parse().unwrap()),
        ..Flags::default()
    };
    let config = Config::with_output(output()).overridden_by(asked).unwrap();
    assert!(config.store.enabled);
    assert_eq!(config.store.retention(), Retention::default());
    assert!(config.metrics.enabled);
}

#[test]
fn the_daemon_keeps_metadata_only_unless_its_configuration_asks_for_content() {
    assert_eq!(Config::default().content.mode, ContentMode::None);
    assert_eq!(file("").content.mode, ContentMode::None);
    assert_eq!(
        file("[content]\nmax_string_bytes = 10").content.mode,
        ContentMode::None
    );
    // The shipped example shows the line, commented out.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observer.toml");
    assert_eq!(
        Config::load(&example).unwrap().content.mode,
        ContentMode::None
    );
    for (line, mode) in [
        ("full", ContentMode::Full),
        ("redacted", ContentMode::Redacted),
    ] {
        let configured = file(&format!("[content]\nmode = \"{line}\""));
        assert_eq!(configured.content.mode, mode);
        let run = configured.overridden_by(Flags::default()).unwrap();
        assert_eq!(run.content.mode, mode);
    }
}

#[test]
fn capture_and_replay_keep_full_content_unless_a_flag_says_otherwise() {
    let config = Config::with_output(output())
        .overridden_by(Flags::default())
        .unwrap();
    assert_eq!(config.content.mode, ContentMode::Full);
    let none = Flags {
        content: ContentFlags {
            mode: Some(ContentMode::None),
            ..ContentFlags::default()
        },
        ..Flags::default()
    };
    let config = Config::with_output(output()).overridden_by(none).unwrap();
    assert_eq!(config.content.mode, ContentMode::None);
}
