//! Benchmark, run by hand (root): what the Go crypto/tls probes add per call. The Go client's
//! `bench` mode times an in-process TLS echo over loopback (four crypto/tls calls per round
//! trip: the client's Write and Read, the server's Read and Write), alone and under
//! `observer capture`, alternating, and the results go to target/bench/go-tls-echo.json.
//! Nothing here asserts a time.
//!
//! `cargo test --release -p observer-e2e --test bench_go -- --ignored --nocapture`

use std::process::Command;

use observer_e2e::go_client::{Build, build_client};
use observer_e2e::harness::{observer_bin, repo_root, require_root};
use serde_json::{Value, json};

const ROUNDS: usize = 5;
const ITERATIONS: &str = "20000";
const SIZE: &str = "1024";

/// Nanoseconds per round trip from the client's `{"bench": ...}` line.
fn ns_per_round_trip(command: &mut Command) -> u64 {
    let out = command.output().expect("run the Go client bench");
    assert!(out.status.success(), "{command:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("bench").is_some())
        .and_then(|v| v["ns_per_round_trip"].as_u64())
        .unwrap_or_else(|| panic!("no bench line from {command:?}: {out:?}"))
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

#[test]
#[ignore = "benchmark: run with --ignored; writes target/bench/go-tls-echo.json"]
fn go_tls_echo_under_the_observer() {
    require_root();
    let client = build_client(Build::Plain);
    let scratch = tempfile::tempdir().expect("temp dir");
    let (mut alone, mut observed) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        alone.push(ns_per_round_trip(
            Command::new(&client).args(["bench", ITERATIONS, SIZE]),
        ));
        observed.push(ns_per_round_trip(
            Command::new(observer_bin())
                .args(["capture", "--format", "jsonl", "--output"])
                .arg(scratch.path().join("spans.jsonl"))
                .arg("--")
                .arg(&client)
                .args(["bench", ITERATIONS, SIZE]),
        ));
    }
    let (alone_median, observed_median) = (median(&alone), median(&observed));
    let results = json!({
        "bench": "go_tls_echo",
        "iterations": ITERATIONS.parse::<u64>().unwrap(),
        "bytes_per_call": SIZE.parse::<u64>().unwrap(),
        "tls_calls_per_round_trip": 4,
        "ns_per_round_trip_alone": alone,
        "ns_per_round_trip_observed": observed,
        "median_alone_ns": alone_median,
        "median_observed_ns": observed_median,
        "added_ns_per_tls_call": observed_median.saturating_sub(alone_median) / 4,
        "note": "both sides share the machine's cores with the observer's user space",
    });
    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("go-tls-echo.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).expect("write results");
    eprintln!("{results:#}\nwritten to {}", path.display());
}
