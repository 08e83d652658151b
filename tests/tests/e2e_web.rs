//! The web view in a real browser: a store filled by real captures (an agent run with a tool,
//! a prompt full of markup) and by the recorded fixtures, served by `observer serve` with its
//! default authentication, read by Debian's headless chromium driven by playwright-core
//! (tests/web/driver.mjs): numbers against the API, markup inert, live updates, auth. Screenshots
//! land in target/web-screenshots/.
use std::{path::Path, process::Command, time::Duration};

use observer_e2e::{
    TestEnv, fixtures,
    harness::{
        Proc, free_port, http_get, npm_program, observer_bin, replay_recording_with, repo_root,
    },
};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `observer capture --store DB -- CLIENT SCENARIOS...`, to completion.
fn capture_into(env: &TestEnv, db: &Path, client: &str, scenarios: &[&str]) {
    let run = env.capture_with(
        &["--store", &db.display().to_string()],
        &[],
        &env.client(client, scenarios),
        false,
    );
    assert!(
        !run.calls.is_empty(),
        "{client} reported no calls:\n{}",
        run.stderr
    );
}

/// `observer serve --db DB` on a free port, and the address it printed.
fn serve(db: &Path) -> (Proc, String, u16) {
    let port = free_port();
    let mut command = Command::new(observer_bin());
    command
        .args(["serve", "--db"])
        .arg(db)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let server = Proc::spawn("observer serve", command);
    let line = server
        .stderr
        .wait_for(Duration::from_secs(30), |l| l.contains("?token="))
        .unwrap_or_else(|| panic!("observer serve printed no address:\n{}", server.describe()));
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("the printed line holds the address")
        .to_string();
    (server, url, port)
}

/// The status code `curl` gets for `url` when run as the unprivileged user nobody.
fn status_as_nobody(url: &str) -> String {
    let output = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()
        .expect("running curl as nobody with setpriv");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_pages_show_the_store_safely_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: `apt-get install chromium` (cargo xtask setup installs it)"
    );
    let playwright = npm_program("playwright-core/index.js");
    let env = TestEnv::new();
    let db = env.dir().join("observer.db");

    capture_into(
        &env,
        &db,
        "linking_calls.py",
        &["tool_round_trip", "conversation"],
    );
    capture_into(&env, &db, "stdlib_calls.py", &["chat_markup", "chat_json"]);
    for fixture in fixtures::all() {
        replay_recording_with(
            &fixture.recording(),
            env.dir(),
            &["--store", &db.display().to_string()],
        );
    }

    let (server, url, port) = serve(&db);
    let (status, _) = http_get(port, "/api/traces").expect("the server answers");
    assert_eq!(status, 401, "a request without the token is refused");
    assert_eq!(
        status_as_nobody(&format!("http://127.0.0.1:{port}/api/traces")),
        "401",
        "another user of the host is refused"
    );

    // The driver adds spans while the trace list is open: one more real capture.
    let live = [
        observer_bin().display().to_string(),
        "capture".into(),
        "--store".into(),
        db.display().to_string(),
        "--output".into(),
        env.dir().join("live.jsonl").display().to_string(),
        "--format".into(),
        "jsonl".into(),
        "--".into(),
    ]
    .into_iter()
    .chain(env.client("stdlib_calls.py", &["chat_json"]))
    .collect::<Vec<_>>();
    let shots = repo_root().join("target/web-screenshots");
    let mut command = Command::new("node");
    command
        .arg(repo_root().join("tests/web/driver.mjs"))
        .arg(&url)
        .arg(&shots)
        .env(
            "PLAYWRIGHT_CORE",
            playwright.parent().expect("the package's directory"),
        )
        .env("CHROMIUM", CHROMIUM)
        .env(
            "LIVE_COMMAND",
            serde_json::to_string(&live).expect("a JSON array"),
        );
    env.client_env(&mut command);
    let mut driver = Proc::spawn("browser driver", command);
    let status = driver.wait(Duration::from_secs(420));
    eprintln!("{}", driver.stdout.text());
    assert!(
        status.success(),
        "the browser checks failed: {}\n--- observer serve ---\n{}",
        driver.describe(),
        server.describe()
    );
    assert!(
        driver.stdout.text().contains("ok no dialog"),
        "the driver stopped before its last check"
    );
    eprintln!("screenshots in {}", shots.display());
}
