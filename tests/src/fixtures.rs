//! Recorded sessions for the replay tests: what the observer captured from a real client
//! (`capture.rec`, secrets already masked by the recorder), what the client saw
//! (`client.jsonl`) and the mock server's port (`server_port`). They are made by running the
//! end-to-end tests with `OBSERVER_SAVE_FIXTURES=tests/fixtures` and replayed without root.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    ClientCall, ObserverRun,
    harness::{replay_recording, replay_recording_with},
};

pub struct Fixture {
    pub dir: PathBuf,
    pub calls: Vec<ClientCall>,
    pub server_port: u16,
}

impl Fixture {
    pub fn recording(&self) -> PathBuf {
        self.dir.join("capture.rec")
    }

    /// The spans `observer replay` makes of the recording, written under `scratch`.
    pub fn replay(&self, scratch: &Path) -> Vec<crate::Span> {
        replay_recording(&self.recording(), scratch)
    }

    /// As [`Self::replay`], with more `observer replay` options.
    pub fn replay_with(&self, scratch: &Path, options: &[&str]) -> Vec<crate::Span> {
        replay_recording_with(&self.recording(), scratch, options)
    }
}

/// The committed fixtures, in name order.
pub fn all() -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.join("capture.rec").exists())
        .collect();
    dirs.sort();
    dirs.into_iter().map(load).collect()
}

fn load(dir: PathBuf) -> Fixture {
    let read = |name: &str| {
        fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("reading {}/{name}: {e}", dir.display()))
    };
    let calls = ClientCall::parse_all(&read("client.jsonl"));
    let server_port = read("server_port")
        .trim()
        .parse()
        .expect("server_port is a port number");
    Fixture {
        dir,
        calls,
        server_port,
    }
}

pub(crate) fn save(root: &Path, script: &str, scenarios: &[&str], run: &ObserverRun, port: u16) {
    let stem = script.trim_end_matches(".py");
    let first = scenarios
        .first()
        .map_or("none", |s| *s)
        .replace([':', '/'], "_");
    let dir = root.join(format!("{stem}-{first}-{}", run.calls.len()));
    fs::create_dir_all(&dir).expect("creating the fixture directory");
    let record = run.record_file.as_ref().expect("fixture runs are recorded");
    fs::copy(record, dir.join("capture.rec")).expect("saving the recording");
    let client: String = run.calls.iter().map(|c| format!("{}\n", c.0)).collect();
    fs::write(dir.join("client.jsonl"), client).expect("saving the client's view");
    fs::write(dir.join("server_port"), port.to_string()).expect("saving the server port");
}
