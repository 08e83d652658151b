//! Pipeline-level property: the spans of a recorded session do not depend on how the kernel
//! happened to cut its byte streams. Every recording in `tests/fixtures` is replayed as
//! recorded and re-split at random points; both must give the same spans.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use observer::{
    capture::{CaptureEvent, Chunk, record::RecordReader},
    pipeline::Pipeline,
    sink::Sink,
    span::Span,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Span>>>);

impl Sink for Collect {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        self.0.lock().expect("collector lock").push(span.clone());
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

fn recordings() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(|e| Some(e.ok()?.path().join("capture.rec")))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
}

fn events(path: &Path) -> Vec<CaptureEvent> {
    RecordReader::open(path)
        .expect("open recording")
        .map(|e| e.expect("valid record"))
        .collect()
}

/// The spans as JSON, their random trace and span ids renamed in order of appearance (so the
/// trace structure is compared, not the ids).
fn replay(events: Vec<CaptureEvent>) -> Vec<Value> {
    let sink = Collect::default();
    let mut pipeline = Pipeline::new(Default::default(), vec![Box::new(sink.clone())]);
    let last = events.iter().map(CaptureEvent::ts).max().unwrap_or(0);
    for event in events {
        pipeline.on_event(event);
    }
    pipeline.finish(last);
    let spans = sink.0.lock().expect("collector lock").clone();
    let mut names = std::collections::HashMap::new();
    let mut rename = |id: &mut Value| {
        if let Value::String(text) = id {
            let next = names.len();
            *text = names
                .entry(text.clone())
                .or_insert(format!("id{next}"))
                .clone();
        }
    };
    spans
        .iter()
        .map(|span| {
            let mut json = serde_json::to_value(span).expect("a span is JSON");
            for id in ["trace_id", "span_id", "parent_span_id"] {
                rename(&mut json[id]);
            }
            for link in json["links"].as_array_mut().into_iter().flatten() {
                rename(&mut link["trace_id"]);
                rename(&mut link["span_id"]);
            }
            json
        })
        .collect()
}

fn split(chunk: Chunk, rng: &mut StdRng) -> Vec<CaptureEvent> {
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < chunk.data.len() {
        let end = (at + rng.random_range(1..=64)).min(chunk.data.len());
        pieces.push(CaptureEvent::Data(Chunk {
            offset: chunk.offset + at as u64,
            data: Bytes::copy_from_slice(&chunk.data[at..end]),
            truncated_after: chunk.truncated_after && end == chunk.data.len(),
            ..chunk.clone()
        }));
        at = end;
    }
    pieces
}

#[test]
fn random_resplitting_of_every_recording_gives_the_same_spans() {
    let recordings = recordings();
    assert!(!recordings.is_empty(), "no recordings under tests/fixtures");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for path in recordings {
        let original = events(&path);
        let expected = replay(original.clone());
        assert!(!expected.is_empty(), "{}: no spans", path.display());
        for round in 0..3 {
            let resplit: Vec<CaptureEvent> = original
                .iter()
                .cloned()
                .flat_map(|event| match event {
                    CaptureEvent::Data(chunk) => split(chunk, &mut rng),
                    other => vec![other],
                })
                .collect();
            let got = replay(resplit);
            assert_eq!(
                got,
                expected,
                "{} round {round}: spans changed when re-split",
                path.display()
            );
        }
    }
}
