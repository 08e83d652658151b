//! End-to-end tests of the observer: a mock LLM API server (`llm-mock-server`), real clients
//! (curl, Python's standard library, the official SDKs, in `clients/`) and the harness the
//! tests in `tests/` use to run them under the observer and compare its spans with what the
//! clients saw.

pub mod actions;
pub mod calls;
pub mod fixtures;
pub mod go_client;
pub mod harness;
pub mod mock;
pub mod span;

pub use calls::{ClientCall, assert_same_spans, assert_spans_match_calls, check_span};
pub use harness::{ObserverRun, TestEnv};
pub use span::Span;

/// Every call span in `spans` came over plaintext HTTP from the mock server at `port`.
pub fn assert_plaintext_calls(spans: &[Span], port: u16) {
    for span in spans.iter().filter(|s| s.is_call()) {
        assert_eq!(
            span.str("observer.tls.library"),
            Some("plaintext"),
            "{span}"
        );
        assert_eq!(
            span.u64("network.peer.port"),
            Some(u64::from(port)),
            "{span}"
        );
    }
}

/// How many calls a client makes for `scenarios`: one each, N for `parallelN:NAME`.
pub fn expected_calls(scenarios: &[&str]) -> usize {
    scenarios
        .iter()
        .map(|s| {
            s.strip_prefix("parallel")
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        })
        .sum()
}

impl TestEnv {
    /// Runs `python clients/SCRIPT SCENARIOS...` under `observer capture` (command mode) and
    /// asserts that every call the client reports has exactly one span saying the same, and
    /// that no other span comes from the client's processes.
    ///
    /// With `OBSERVER_SAVE_FIXTURES=DIR` the run is recorded and, once it passed, its recording
    /// and what the client saw are saved under DIR for the replay tests (`tests/fixtures`).
    pub fn check_client(&self, script: &str, scenarios: &[&str], record: bool) -> ObserverRun {
        self.check_client_with_env(script, scenarios, &[], record)
    }

    /// As [`Self::check_client`], the client run with `env` (`NAME=VALUE`) added to its
    /// environment.
    pub fn check_client_with_env(
        &self,
        script: &str,
        scenarios: &[&str],
        env: &[&str],
        record: bool,
    ) -> ObserverRun {
        let save_to = std::env::var_os("OBSERVER_SAVE_FIXTURES").map(std::path::PathBuf::from);
        let mut command: Vec<String> = Vec::new();
        if !env.is_empty() {
            command.push("/usr/bin/env".to_owned());
            command.extend(env.iter().map(|e| e.to_string()));
        }
        command.extend(self.client(script, scenarios));
        let run = self.check_command(
            &command,
            expected_calls(scenarios),
            record || save_to.is_some(),
        );
        if let Some(dir) = save_to {
            // Runs of one script under different environments are kept apart.
            let label = std::iter::once(script.trim_end_matches(".py"))
                .chain(env.iter().copied())
                .collect::<Vec<_>>()
                .join("+")
                .to_ascii_lowercase()
                .replace('=', "_");
            fixtures::save(&dir, &label, scenarios, &run, self.server.port);
        }
        run
    }

    /// Runs `command` (a client printing call records) under `observer capture` and asserts
    /// that it reported `expected` calls, each agreeing with the mock server and recorded by
    /// exactly one span saying the same, and no other span from the client's processes.
    pub fn check_command(&self, command: &[String], expected: usize, record: bool) -> ObserverRun {
        self.check_command_with_env(&[], command, expected, record)
    }

    /// As [`Self::check_command`], with `env` added to the observer's environment (which the
    /// client inherits).
    pub fn check_command_with_env(
        &self,
        env: &[(&str, &str)],
        command: &[String],
        expected: usize,
        record: bool,
    ) -> ObserverRun {
        let run = self.capture_with(&[], env, command, record);
        assert_eq!(
            run.calls.len(),
            expected,
            "{command:?} reported {} calls, expected {expected}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            run.calls.len(),
            run.stdout,
            run.stderr
        );
        for call in &run.calls {
            call.assert_consistent_with_mock();
        }
        assert_spans_match_calls(&run.spans, &run.calls, self.server.port);
        run
    }

    /// Watches the whole host, runs `client` (not a child of the observer) once `ready`, waits
    /// a bounded moment for a span per reported call from the calling processes, then stops
    /// the observer with SIGINT. Returns the run and the calls the client reported.
    pub fn watch_host_while(&self, client: &[String]) -> (ObserverRun, Vec<ClientCall>) {
        self.calls_while(self.watch(&[]), client)
    }

    /// As [`Self::watch_host_while`], the observer starting with an empty analysis cache:
    /// `client` (a fresh copy, see [`TestEnv::fresh_copy`]) is analysed at its `execve`.
    pub fn watch_host_while_unseen(&self, client: &[String]) -> (ObserverRun, Vec<ClientCall>) {
        self.calls_while(self.watch_unseen(), client)
    }

    fn calls_while(
        &self,
        watcher: harness::Watcher,
        client: &[String],
    ) -> (ObserverRun, Vec<ClientCall>) {
        let mut proc = self.spawn_client(client);
        let status = proc.wait(std::time::Duration::from_secs(60));
        assert!(status.success(), "client failed: {}", proc.describe());
        let calls = ClientCall::parse_all(&proc.stdout.text());
        let pids: Vec<u64> = calls.iter().map(ClientCall::pid).collect();
        // Spans are written as calls complete; give the pipeline a bounded moment.
        watcher.wait_for_spans(std::time::Duration::from_secs(20), |spans| {
            spans
                .iter()
                .filter(|s| s.is_call() && s.u64("process.pid").is_some_and(|p| pids.contains(&p)))
                .count()
                >= calls.len()
        });
        let run = watcher.stop(libc::SIGINT);
        run.assert_success();
        (run, calls)
    }

    /// The server-side TCP connection each call's response came on (None for calls without a
    /// response id).
    pub fn connections(&self, calls: &[ClientCall]) -> Vec<Option<u64>> {
        calls
            .iter()
            .map(|c| c.response_id().and_then(|id| self.server.connection_of(id)))
            .collect()
    }
}
