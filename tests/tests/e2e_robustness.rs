//! Faults: the observer stopped by SIGTERM or killed outright and restarted on the same store,
//! clients killed mid-stream, bulk non-LLM traffic the capture must not copy.

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use observer_e2e::{ClientCall, TestEnv, harness::observer_bin};

/// `observer traces --db DB --spans --format json`: the stored spans.
fn stored_spans(db: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(observer_bin())
        .args([
            "traces", "--spans", "--format", "json", "--limit", "1000", "--db",
        ])
        .arg(db)
        .output()
        .expect("running observer traces");
    assert!(
        out.status.success(),
        "observer traces failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("observer traces printed no JSON ({error}): {text}"));
    match value.get("spans") {
        Some(serde_json::Value::Array(rows)) => rows.clone(),
        _ => panic!("observer traces printed no span list: {value}"),
    }
}

/// Runs one client call while `watcher` watches, and waits for its span. Returns the client's pid.
fn one_call(env: &TestEnv, watcher: &observer_e2e::harness::Watcher) -> u64 {
    let mut client = env.spawn_client(&env.client("stdlib_calls.py", &["chat_json"]));
    assert!(
        client.wait(Duration::from_secs(60)).success(),
        "client failed: {}",
        client.describe()
    );
    let pid = u64::from(client.pid());
    assert!(
        watcher.wait_for_spans(Duration::from_secs(20), |spans| spans
            .iter()
            .any(|s| s.u64("process.pid") == Some(pid))),
        "no span for the client's call"
    );
    pid
}

/// SIGKILL (no flush, no detach by the observer itself) leaves a store the next observer opens
/// and adds to, and the kernel takes the killed observer's probes down with its descriptors.
#[test]
fn sigkill_then_restart_on_the_same_store() {
    let env = TestEnv::new();
    let db = env.dir().join("store.db");
    let db_arg = db.display().to_string();

    let watcher = env.watch(&["--store", &db_arg]);
    one_call(&env, &watcher);
    let killed_pid = watcher.pid();
    let killed = watcher.stop(libc::SIGKILL);
    assert!(!killed.status.success(), "SIGKILL should end the observer");
    // Its probes went with its file descriptors: nothing of it is left in the process table.
    assert!(
        !std::path::Path::new(&format!("/proc/{killed_pid}")).exists(),
        "the killed observer is still there"
    );

    let watcher = env.watch(&["--store", &db_arg]);
    one_call(&env, &watcher);
    let run = watcher.stop(libc::SIGTERM);
    run.assert_success();

    // The second run's span is in the store; the first run's is there too unless the kill
    // landed before its batch was written (the writer batches), never a corrupt store.
    let spans = stored_spans(&db);
    assert!(
        !spans.is_empty() && spans.len() <= 2,
        "expected the restarted observer's span (and maybe the killed one's), got {spans:?}"
    );
}

/// A client killed in the middle of a stream: its call becomes a span marked incomplete, with
/// what had arrived, as soon as the process is gone (not when the observer stops).
#[test]
fn client_killed_mid_stream_yields_an_incomplete_span() {
    let env = TestEnv::new();
    let watcher = env.watch(&[]);
    let (client, response_id) = env.start_slow_stream();
    std::thread::sleep(Duration::from_millis(800));
    client.signal(libc::SIGKILL);
    drop(client);

    let found = watcher.wait_for_spans(Duration::from_secs(20), |spans| {
        spans
            .iter()
            .any(|s| s.str("gen_ai.response.id") == Some(response_id.as_str()))
    });
    let run = watcher.stop(libc::SIGINT);
    run.assert_success();
    assert!(
        found,
        "no span for the killed client's stream {response_id} before the observer stopped"
    );
    let span = run
        .spans
        .iter()
        .find(|s| s.str("gen_ai.response.id") == Some(response_id.as_str()))
        .expect("the span seen while watching is in the output");
    assert!(
        span.str("error.type").is_some_and(|e| !e.is_empty()),
        "a stream cut by the client's death must be marked incomplete: {span}"
    );
    assert_eq!(span.str("gen_ai.request.model"), Some("gpt-4o"), "{span}");
}

/// A 64 MiB non-LLM download on a kept-alive connection, then an LLM call on the same
/// connection, over TLS and over plaintext: the download's response is not copied (the kernel
/// stops at the end of its request), the call after it is whole, and the recording of what was
/// copied replays to the same spans.
#[test]
fn a_non_llm_download_is_not_copied_and_the_call_after_it_is_whole() {
    // One at a time: a test environment holds the test binary's lock.
    for make_env in [TestEnv::new, TestEnv::plaintext] {
        let env = make_env();
        let run = env.check_client(
            "stdlib_calls.py",
            &["chat_after_download", "chat_json"],
            true,
        );
        let conns = env.connections(&run.calls);
        assert!(
            conns[0].is_some() && conns.iter().all(|c| *c == conns[0]),
            "test setup: the download and the calls were meant to share one connection: {conns:?}"
        );
        let recording = run.record_file.as_ref().expect("recorded");
        let copied = std::fs::metadata(recording).expect("recording").len();
        // The server may have written part of the response before the observer's verdict
        // reached the kernel; most of the 64 MiB must not have been copied.
        assert!(
            copied < 16 << 20,
            "{copied} bytes recorded: the download's response was copied ({})",
            env.server.base_url()
        );
        assert!(
            run.stderr.contains(" 0 events lost"),
            "events were lost:\n{}",
            run.stderr
        );
        observer_e2e::assert_same_spans(&run.replay(env.dir()), &run.spans);
    }
}

/// The kernel objects a process holds open: BPF programs, links and maps, by id, from the
/// `prog_id:`, `link_id:` and `map_id:` lines of its descriptors' fdinfo.
#[derive(Debug, Default)]
struct HeldBpf {
    programs: BTreeSet<u32>,
    links: BTreeSet<u32>,
    maps: BTreeSet<u32>,
}

impl HeldBpf {
    /// What both hold.
    fn and(&self, other: &HeldBpf) -> HeldBpf {
        HeldBpf {
            programs: &self.programs & &other.programs,
            links: &self.links & &other.links,
            maps: &self.maps & &other.maps,
        }
    }
}

fn bpf_held_by(pid: u32) -> HeldBpf {
    let mut held = HeldBpf::default();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir}: {e}")) {
        // A descriptor closed since the listing has no fdinfo any more.
        let Ok(info) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue;
        };
        for line in info.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(id) = value.trim().parse::<u32>() else {
                continue;
            };
            match key {
                "prog_id" => held.programs.insert(id),
                "link_id" => held.links.insert(id),
                "map_id" => held.maps.insert(id),
                _ => false,
            };
        }
    }
    held
}

/// Of `held`, what the kernel still has loaded.
fn still_loaded(held: &HeldBpf) -> HeldBpf {
    HeldBpf {
        programs: aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| held.programs.contains(id))
            .collect(),
        links: aya::programs::loaded_links()
            .filter_map(Result::ok)
            .map(|l| l.id())
            .filter(|id| held.links.contains(id))
            .collect(),
        maps: aya::maps::loaded_maps()
            .filter_map(Result::ok)
            .map(|m| m.id())
            .filter(|id| held.maps.contains(id))
            .collect(),
    }
}

/// SIGTERM (what systemd and container runtimes send) stops the observer cleanly: it exits 0
/// within seconds with the span of the call it saw written, every BPF program, link and map it
/// held is gone from the kernel (only this observer's: other tests run theirs in parallel), and
/// TLS calls made afterwards work as before.
#[test]
fn sigterm_detaches_every_probe() {
    let env = TestEnv::new();
    let watcher = env.watch(&[]);
    let observer_pid = watcher.pid();
    let client_pid = one_call(&env, &watcher);
    let held = bpf_held_by(observer_pid);
    assert!(
        !held.programs.is_empty() && !held.maps.is_empty(),
        "the observer holds no BPF program or map after a captured call: {held:?}"
    );
    // The kernel's listing sees them while the observer runs (so the check below can fail);
    // of what it held throughout the listing, since the whole-host watch detaches the probes
    // of processes that exit (other tests' clients) at any moment.
    let loaded = still_loaded(&held);
    let steady = held.and(&bpf_held_by(observer_pid));
    assert!(
        steady.programs.is_subset(&loaded.programs)
            && steady.links.is_subset(&loaded.links)
            && steady.maps.is_subset(&loaded.maps),
        "the kernel's listing misses some of what the observer holds: {loaded:?} of {steady:?}"
    );
    eprintln!("observer {observer_pid} holds {held:?}");

    let run = watcher.stop_within(libc::SIGTERM, Duration::from_secs(10));
    run.assert_success();
    assert!(
        run.spans
            .iter()
            .any(|s| s.is_call() && s.u64("process.pid") == Some(client_pid)),
        "the call's span is not in the output after SIGTERM: {:?}",
        run.spans
    );

    // The kernel frees a program once its last reference (descriptor, link, attached perf
    // event) is dropped, which can trail the process's exit by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = still_loaded(&held);
    while !(left.programs.is_empty() && left.links.is_empty() && left.maps.is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        left = still_loaded(&held);
    }
    assert!(
        left.programs.is_empty() && left.links.is_empty() && left.maps.is_empty(),
        "still in the kernel after the observer exited: {left:?} (it held {held:?})"
    );

    let mut client = env.spawn_client(&env.client("stdlib_calls.py", &["chat_json"]));
    assert!(
        client.wait(Duration::from_secs(60)).success(),
        "a TLS call after the observer stopped failed: {}",
        client.describe()
    );
    assert_eq!(
        ClientCall::parse_all(&client.stdout.text()).len(),
        1,
        "the client reported no call after the observer stopped: {}",
        client.describe()
    );
}
