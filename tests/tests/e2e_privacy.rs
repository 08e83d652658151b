//! What the observer writes holds every user's prompts: under the usual umask (022), another
//! user of the host can read none of it: the JSON lines output, the recording, the store with
//! its WAL and shared-memory files, the analysis cache.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use observer_e2e::{
    TestEnv,
    harness::{Proc, READY_TIMEOUT, STOP_TIMEOUT, observer_bin, python},
};

/// The unprivileged user who tries to read: `nobody`, with no supplementary groups.
const OTHER_USER: &str = "65534";

/// Whether the unprivileged user can open `path` for reading.
fn other_user_can_read(path: &Path) -> bool {
    let status = Command::new("setpriv")
        .args([
            "--reuid",
            OTHER_USER,
            "--regid",
            OTHER_USER,
            "--clear-groups",
        ])
        .arg("cat")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running setpriv (util-linux)");
    status.success()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .mode()
        & 0o7777
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("listing").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn another_user_reads_nothing_the_observer_wrote() {
    let env = TestEnv::new();
    // SAFETY: umask only swaps this process's mask; the observer inherits it.
    let previous = unsafe { libc::umask(0o022) };
    let dir = env.dir();
    // Everything open to the other user but the files themselves: the test's directory, the
    // store's, and a file left by an earlier run with the umask's permissions.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod the test dir");
    let store_dir = dir.join("store");
    fs::create_dir(&store_dir).expect("store dir");
    fs::set_permissions(&store_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let jsonl = dir.join("also.jsonl");
    fs::write(&jsonl, b"").expect("an earlier run's file");
    fs::set_permissions(&jsonl, fs::Permissions::from_mode(0o644)).expect("chmod");
    // The check itself can fail: the other user reads a file the observer did not write.
    let control = dir.join("control");
    fs::write(&control, b"readable").expect("control file");
    assert_eq!(mode(&control), 0o644);
    assert!(
        other_user_can_read(&control),
        "the unprivileged user cannot read a 0644 file in the test directory: the test \
         proves nothing"
    );

    let db = store_dir.join("observer.db");
    let record = dir.join("capture.rec");
    let cache = dir.join("cache");
    let python_comm: String = python()
        .file_name()
        .expect("python's name")
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let watcher = env.watch_with_env(
        &[
            "--comm",
            &python_comm,
            "--store",
            &db.display().to_string(),
            "--record",
            &record.display().to_string(),
        ],
        &[("OBSERVER_CACHE_DIR", &cache.display().to_string())],
    );
    let mut client = env.spawn_client(&env.client("stdlib_calls.py", &["chat_json"]));
    assert!(
        client.wait(Duration::from_secs(60)).success(),
        "client failed: {}",
        client.describe()
    );
    assert!(
        watcher.wait_for_spans(Duration::from_secs(20), |spans| !spans.is_empty()),
        "no span for the client's call"
    );
    // The store writer batches: wait for its WAL, which exists only while the observer runs.
    let wal = store_dir.join("observer.db-wal");
    let shm = store_dir.join("observer.db-shm");
    for _ in 0..100 {
        if wal.exists() && shm.exists() && fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut written = vec![db.clone(), wal, shm, record.clone()];
    written.extend(files_under(&cache));
    assert!(
        written.len() > 4,
        "no analysis was cached in {}",
        cache.display()
    );
    let check = |files: &[PathBuf]| {
        for file in files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
            assert!(
                !other_user_can_read(file),
                "another user can read {}",
                file.display()
            );
        }
    };
    check(&written);
    // The cache and its format's directory (analysis-vN, whatever N is now).
    let directories: Vec<PathBuf> = std::iter::once(cache.clone())
        .chain(
            fs::read_dir(&cache)
                .expect("listing the cache")
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.is_dir()),
        )
        .collect();
    assert!(directories.len() > 1, "no format directory in the cache");
    for created in directories {
        assert_eq!(mode(&created), 0o700, "{}", created.display());
    }

    let run = watcher.stop(libc::SIGTERM);
    run.assert_success();
    assert!(!run.spans.is_empty());
    check(&[run.output_file.clone(), record.clone(), db]);

    // `observer replay --store` into a new store, and an existing file appended to by the
    // daemon's JSON lines sink (tightened, and said so).
    let replayed = dir.join("replayed.db");
    let out = Command::new(observer_bin())
        .arg("replay")
        .arg(&record)
        .args(["--quiet", "--output"])
        .arg(dir.join("replay.jsonl"))
        .arg("--store")
        .arg(&replayed)
        .output()
        .expect("observer replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&[replayed, dir.join("replay.jsonl")]);
    let mut daemon = Command::new(observer_bin());
    daemon
        .arg("run")
        .args(["--pid", "1", "--no-store", "--no-metrics", "--jsonl"])
        .arg(&jsonl)
        .env("OBSERVER_CACHE_DIR", &cache);
    let mut daemon = Proc::spawn("observer run", daemon);
    assert!(
        daemon
            .stderr
            .wait_for(READY_TIMEOUT, |line| line.starts_with("ready"))
            .is_some(),
        "observer run did not start: {}",
        daemon.describe()
    );
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(STOP_TIMEOUT).success(), "{}", daemon.describe());
    assert!(
        daemon
            .stderr
            .text()
            .contains("was open to other users (mode 0644); made it private (0600)"),
        "the tightening is not said: {}",
        daemon.describe()
    );
    check(&[jsonl]);
    unsafe { libc::umask(previous) };
}
