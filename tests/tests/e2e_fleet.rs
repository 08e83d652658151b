//! A fleet exporting to one collector, as an operator's DaemonSet would: three `observer run`
//! daemons, each a "host" with its own `host.name` (OTEL_RESOURCE_ATTRIBUTES) and store,
//! watching only its own clients (`--pid` of the driver that starts them) and configured for
//! export only through the standard OTEL_* variables, export to one OTLP receiver
//! (`otlp-receiver`: gRPC, gRPC and HTTP/protobuf over TLS with client certificates). The receiver
//! is killed for 40 s (five times the 8 s the exporter used to retry for) and started again on
//! the same ports; meanwhile one daemon is SIGKILLed and restarted on its store. Every span each
//! host stored arrives, carrying its host's name, and none twice beyond what the crashes allow.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use observer_e2e::{
    ClientCall, TestEnv,
    harness::{
        Proc, READY_TIMEOUT, STOP_TIMEOUT, built_program, clients_dir, observer_bin, python,
    },
};
use serde_json::Value;

/// Longer than the old retry budget (about 8 s) many times over.
const OUTAGE: Duration = Duration::from_secs(40);
/// How long the exporters may take to catch up once the receiver is back: their backoff
/// reaches 30 s (±50%) during the outage.
const CATCH_UP: Duration = Duration::from_secs(120);
const TOKEN: &str = "fleet-token-4f1d";

struct Receiver {
    proc: Proc,
    /// gRPC, gRPC over TLS, HTTP, HTTPS.
    ports: [u16; 4],
}

impl Receiver {
    /// Starts the receiver, on `ports` when given (a restart), else on free ones.
    fn start(dir: &Path, ports: Option<[u16; 4]>) -> Receiver {
        let mut command = Command::new(built_program(
            "otlp-receiver",
            "cargo builds it with the tests",
        ));
        command.arg("--dir").arg(dir).args(["--token", TOKEN]);
        if let Some(ports) = ports {
            let flags = ["--grpc-port", "--grpcs-port", "--http-port", "--https-port"];
            for (flag, port) in flags.into_iter().zip(ports) {
                command.args([flag, &port.to_string()]);
            }
        }
        let proc = Proc::spawn("otlp-receiver", command);
        let line = proc
            .stdout
            .wait_for(Duration::from_secs(30), |l| l.starts_with("listening "))
            .unwrap_or_else(|| panic!("the OTLP receiver did not start: {}", proc.describe()));
        // listening grpc=ADDR grpcs=ADDR http=ADDR https=ADDR
        let port = |key: &str| -> u16 {
            line.split(' ')
                .find_map(|field| field.strip_prefix(key))
                .and_then(|addr| addr.rsplit(':').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        Receiver {
            ports: [port("grpc="), port("grpcs="), port("http="), port("https=")],
            proc,
        }
    }

    /// The requests it accepted.
    fn requests(&self) -> Vec<Value> {
        self.proc
            .stdout
            .lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a receiver line is JSON"))
            .collect()
    }
}

/// One watched "host": a driver starting a client call after another, a daemon following the
/// driver and its children, its store and its OTEL_* settings.
struct Host {
    name: &'static str,
    store: PathBuf,
    otel: Vec<(String, String)>,
    driver: Proc,
    daemon: Option<Proc>,
}

impl Host {
    fn new(env: &TestEnv, name: &'static str, otel: Vec<(String, String)>) -> Host {
        let dir = env.dir();
        // Waits for GO, then runs one client process per call until STOP.
        let script = format!(
            "while [ ! -e {go} ]; do sleep 0.1; done; \
             while [ ! -e {stop} ]; do {python} {client} chat_json; sleep 0.3; done",
            go = dir.join("GO").display(),
            stop = dir.join("STOP").display(),
            python = python().display(),
            client = clients_dir().join("stdlib_calls.py").display(),
        );
        let mut command = Command::new("sh");
        command.args(["-c", &script]);
        env.client_env(&mut command);
        Host {
            name,
            store: dir.join(format!("{name}.db")),
            otel,
            driver: Proc::spawn(&format!("{name} driver"), command),
            daemon: None,
        }
    }

    /// `observer run` following this host's driver, once it says `ready`.
    fn start_daemon(&mut self) {
        let mut command = Command::new(observer_bin());
        command
            .args([
                "run",
                "--no-metrics",
                "--pid",
                &self.driver.pid().to_string(),
            ])
            .arg("--store")
            .arg(&self.store)
            .env("RUST_LOG", "observer=info")
            .envs(self.otel.iter().map(|(k, v)| (k, v)));
        let daemon = Proc::spawn(&format!("observer run ({})", self.name), command);
        if daemon
            .stderr
            .wait_for(READY_TIMEOUT, |l| l.starts_with("ready"))
            .is_none()
        {
            panic!("{} did not get ready: {}", self.name, daemon.describe());
        }
        self.daemon = Some(daemon);
    }

    fn daemon(&mut self) -> &mut Proc {
        self.daemon.as_mut().expect("the daemon runs")
    }

    /// The spans in the host's store: span id → the span (with `attributes`).
    fn stored(&self) -> BTreeMap<String, Value> {
        let output = Command::new(observer_bin())
            .args([
                "traces", "--spans", "--format", "json", "--limit", "10000", "--db",
            ])
            .arg(&self.store)
            .output()
            .expect("observer traces");
        assert!(
            output.status.success(),
            "observer traces on {}: {}",
            self.store.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let listing: Value = serde_json::from_slice(&output.stdout).expect("traces JSON");
        listing["spans"]
            .as_array()
            .expect("a span list")
            .iter()
            .map(|span| (span["span_id"].as_str().unwrap().to_owned(), span.clone()))
            .collect()
    }
}

fn otel(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// What the receiver's runs accepted: each span id with how often, by host.
struct Arrivals {
    /// span id → (host names it came with, times received).
    spans: BTreeMap<String, (BTreeSet<String>, usize)>,
}

impl Arrivals {
    fn of(requests: &[Value]) -> Arrivals {
        let mut spans: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
        for span in requests.iter().flat_map(|r| r["spans"].as_array().unwrap()) {
            let entry = spans
                .entry(span["span_id"].as_str().unwrap().to_owned())
                .or_default();
            entry
                .0
                .insert(span["host"].as_str().unwrap_or("?").to_owned());
            entry.1 += 1;
        }
        Arrivals { spans }
    }

    fn has_all(&self, stored: &BTreeMap<String, Value>) -> bool {
        stored.keys().all(|id| self.spans.contains_key(id))
    }
}

/// Span ids in the last request each host's exporter had accepted by `receiver` before it was
/// killed: its answer may not have reached the exporter, which then sends them again.
fn maybe_unanswered(receiver: &[Value]) -> BTreeSet<String> {
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for request in receiver {
        let spans = request["spans"].as_array().unwrap();
        if let Some(host) = spans.first().and_then(|s| s["host"].as_str()) {
            last.insert(host.to_owned(), request);
        }
    }
    last.values()
        .flat_map(|r| r["spans"].as_array().unwrap())
        .map(|s| s["span_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_fleet_loses_no_span_to_a_collector_outage_or_a_daemon_crash() {
    let env = TestEnv::new();
    let receiver_dir = env.dir().join("receiver");
    let first = Receiver::start(&receiver_dir, None);
    let ports = first.ports;
    let [grpc, grpcs, _, https] = ports;
    let resource = |host: &str| format!("host.name={host},deployment.environment=e2e");
    let token = || {
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("x-fleet-token={TOKEN}"),
        )
    };
    let tls = |file: &str| receiver_dir.join(file).display().to_string();
    let mut hosts = vec![
        Host::new(
            &env,
            "fleet-a",
            otel(&[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{grpc}"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
                token(),
                ("OTEL_RESOURCE_ATTRIBUTES", resource("fleet-a")),
                ("OTEL_SERVICE_NAME", "observer-fleet".into()),
            ]),
        ),
        // Crashed and restarted; HTTP over TLS with a client certificate (the traces forms of
        // the variables), uncompressed.
        Host::new(
            &env,
            "fleet-b",
            otel(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    format!("https://127.0.0.1:{https}/v1/traces"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", tls("ca.pem")),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                    tls("client.pem"),
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", tls("client.key")),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "none".into()),
                token(),
                ("OTEL_RESOURCE_ATTRIBUTES", resource("fleet-b")),
                ("OTEL_SERVICE_NAME", "observer-fleet".into()),
            ]),
        ),
        // gRPC over TLS: the receiver's CA, and a client certificate it requires.
        Host::new(
            &env,
            "fleet-c",
            otel(&[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("https://127.0.0.1:{grpcs}"),
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc".into()),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", tls("ca.pem")),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", tls("client.pem")),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", tls("client.key")),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()),
                token(),
                ("OTEL_RESOURCE_ATTRIBUTES", resource("fleet-c")),
                ("OTEL_SERVICE_NAME", "observer-fleet".into()),
            ]),
        ),
    ];
    for host in &mut hosts {
        host.start_daemon();
    }
    std::fs::write(env.dir().join("GO"), "").unwrap();

    // Calls flow and arrive, each host's over its protocol.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let arrivals = Arrivals::of(&first.requests());
        let per_host = |host: &str| {
            arrivals
                .spans
                .values()
                .filter(|(hosts, _)| hosts.contains(host))
                .count()
        };
        if hosts.iter().all(|h| per_host(h.name) >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans did not reach the receiver from every host: {:?}\n{}",
            hosts
                .iter()
                .map(|h| (h.name, per_host(h.name)))
                .collect::<Vec<_>>(),
            hosts
                .iter()
                .map(|h| h.daemon.as_ref().unwrap().describe())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The collector goes away.
    let mut first = first;
    first.proc.signal(libc::SIGKILL);
    first.proc.wait(Duration::from_secs(10));
    let down = Instant::now();
    let down_ns = unix_nanos();
    let first_requests = first.requests();

    // Meanwhile one host's daemon crashes, and comes back on its store.
    std::thread::sleep(OUTAGE / 4);
    let crashed = &mut hosts[1];
    crashed.daemon().signal(libc::SIGKILL);
    crashed.daemon().wait(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    crashed.start_daemon();

    // The collector comes back on the same ports.
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    let up_ns = unix_nanos();
    let second = Receiver::start(&receiver_dir, Some(ports));
    std::thread::sleep(Duration::from_secs(5));
    std::fs::write(env.dir().join("STOP"), "").unwrap();
    for host in &mut hosts {
        let status = host.driver.wait(Duration::from_secs(120));
        assert!(status.success(), "{}", host.driver.describe());
    }

    // Everything each host stored arrives, without the daemons being stopped.
    let deadline = Instant::now() + CATCH_UP;
    let arrived = |second: &Receiver| {
        let mut requests = first_requests.clone();
        requests.extend(second.requests());
        Arrivals::of(&requests)
    };
    while !hosts.iter().all(|h| arrived(&second).has_all(&h.stored())) {
        assert!(
            Instant::now() < deadline,
            "the stored spans did not all arrive within {CATCH_UP:?} of the receiver's return:\n{}",
            hosts
                .iter()
                .map(|h| h.daemon.as_ref().unwrap().describe())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // The daemons stop cleanly (sending what their last moments stored).
    let mut logs = BTreeMap::new();
    for host in &mut hosts {
        let name = host.name;
        let daemon = host.daemon();
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait(STOP_TIMEOUT);
        assert!(status.success(), "{}", daemon.describe());
        logs.insert(name, daemon.stderr.text());
    }
    let mut requests = first_requests.clone();
    requests.extend(second.requests());
    let arrivals = Arrivals::of(&requests);
    let unanswered = maybe_unanswered(&first_requests);

    for host in &hosts {
        let stored = host.stored();
        let log = &logs[host.name];
        // The daemon followed its host's clients. Whether it captured every call is the other
        // tests' subject (this one is about what becomes of what was stored): a miss is shown.
        let calls = ClientCall::parse_all(&host.driver.stdout.text());
        assert!(
            calls.len() >= 20 && stored.len() >= 20,
            "{}: {} calls, {} stored",
            host.name,
            calls.len(),
            stored.len()
        );
        let missed: Vec<&str> = calls
            .iter()
            .filter_map(ClientCall::response_id)
            .filter(|id| {
                !stored
                    .values()
                    .any(|s| s["attributes"]["gen_ai.response.id"] == *id)
            })
            .collect();
        // Every stored span arrived, with this host's name only.
        for id in stored.keys() {
            let (names, times) = arrivals
                .spans
                .get(id)
                .unwrap_or_else(|| panic!("{}: span {id} never arrived\n{log}", host.name));
            assert_eq!(
                names,
                &BTreeSet::from([host.name.to_owned()]),
                "span {id} of {}",
                host.name
            );
            // Twice only where a crash leaves it unknown whether the receiver had it: the
            // receiver's last answers before it was killed, or the crashed daemon's last batch.
            if *times > 1 {
                assert!(
                    *times == 2 && (unanswered.contains(id) || host.name == "fleet-b"),
                    "{}: span {id} arrived {times} times\n{log}",
                    host.name
                );
            }
        }
        let duplicates = stored
            .keys()
            .filter(|id| arrivals.spans[*id].1 > 1 && !unanswered.contains(*id))
            .count();
        assert!(duplicates <= 512, "{}: {duplicates} spans twice", host.name);
        // The outage was seen, and outlasted: the exporter said so, and spans the host captured
        // while the receiver was down arrived from the second receiver.
        assert!(log.contains("is not taking spans"), "{}: {log}", host.name);
        assert!(
            log.contains("is taking spans again"),
            "{}: {log}",
            host.name
        );
        println!(
            "{}: {} calls ({} not captured{}), {} spans stored, all arrived ({} twice)",
            host.name,
            calls.len(),
            missed.len(),
            if host.name == "fleet-b" {
                ", some while its daemon was down"
            } else {
                ""
            },
            stored.len(),
            duplicates
        );
    }
    // Nothing arrived that no host stored.
    let stored: BTreeSet<String> = hosts.iter().flat_map(|h| h.stored().into_keys()).collect();
    let phantom: Vec<&String> = arrivals
        .spans
        .keys()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(phantom.is_empty(), "spans no host stored: {phantom:?}");
    // Each host captured calls while the receiver was down (all of which arrived, above).
    for host in &hosts {
        let during_outage = host
            .stored()
            .values()
            .filter(|s| {
                let start = s["start_time_unix_nano"].as_u64().unwrap();
                (down_ns..up_ns).contains(&start)
            })
            .count();
        assert!(
            during_outage > 0,
            "{}: no call during the outage",
            host.name
        );
    }
    // Each protocol was used as configured.
    let protocols: BTreeSet<(String, bool)> = requests
        .iter()
        .map(|r| {
            (
                r["protocol"].as_str().unwrap().to_owned(),
                r["compressed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        protocols,
        BTreeSet::from([
            ("grpc".to_owned(), true),
            ("grpcs".to_owned(), true),
            ("https".to_owned(), false)
        ])
    );
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}
