//! Replay tests (no root): each recorded session in `tests/fixtures` must give, through
//! `observer replay`, exactly the spans that agree with what its real client saw.
use observer_e2e::{assert_spans_match_calls, fixtures};

#[test]
fn every_recorded_session_replays_to_what_its_client_saw() {
    let fixtures = fixtures::all();
    assert!(!fixtures.is_empty(), "no fixtures under tests/fixtures");
    for fixture in fixtures {
        let scratch = tempfile::tempdir().expect("scratch directory");
        let spans = fixture.replay(scratch.path());
        eprintln!(
            "{}: {} calls, {} spans",
            fixture.dir.display(),
            fixture.calls.len(),
            spans.len()
        );
        assert_spans_match_calls(&spans, &fixture.calls, fixture.server_port);
    }
}
