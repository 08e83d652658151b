//! End-to-end tests of the observer: a mock LLM API server (`llm-mock-server`), real clients
//! (curl, Python's standard library, the official SDKs, in `clients/`) and the harness the
//! tests in `tests/` use to run them under the observer and compare its spans with what the
//! clients saw.

pub mod calls;
pub mod fixtures;
pub mod harness;
pub mod mock;
pub mod span;

pub use calls::{ClientCall, assert_same_spans, assert_spans_match_calls, check_span};
pub use harness::{ObserverRun, TestEnv};
pub use span::Span;

impl TestEnv {
    /// Runs `python clients/SCRIPT SCENARIOS...` under `observer capture` (command mode) and
    /// asserts that every call the client reports has exactly one span saying the same, and
    /// that no other span comes from the client's processes.
    ///
    /// With `OBSERVER_SAVE_FIXTURES=DIR` the run is recorded and, once it passed, its recording
    /// and what the client saw are saved under DIR for the replay tests (`tests/fixtures`).
    pub fn check_client(&self, script: &str, scenarios: &[&str], record: bool) -> ObserverRun {
        self.check_command(script, &self.client(script, scenarios), scenarios, record)
    }

    /// Like [`TestEnv::check_client`], for any client command (`argv` ends with the scenarios)
    /// that prints the same call records; `script` names it in messages and fixtures.
    pub fn check_command(
        &self,
        script: &str,
        argv: &[String],
        scenarios: &[&str],
        record: bool,
    ) -> ObserverRun {
        let save_to = std::env::var_os("OBSERVER_SAVE_FIXTURES").map(std::path::PathBuf::from);
        let run = self.capture(argv, record || save_to.is_some());
        let expected: usize = scenarios
            .iter()
            .map(|s| {
                s.strip_prefix("parallel")
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1)
            })
            .sum();
        assert_eq!(
            run.calls.len(),
            expected,
            "{script} {scenarios:?} reported {} calls, expected {expected}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            run.calls.len(),
            run.stdout,
            run.stderr
        );
        for call in &run.calls {
            call.assert_consistent_with_mock();
        }
        assert_spans_match_calls(&run.spans, &run.calls, self.server.port);
        if let Some(dir) = save_to {
            fixtures::save(&dir, script, scenarios, &run, self.server.port);
        }
        run
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
