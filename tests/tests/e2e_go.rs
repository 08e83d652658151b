//! Go's crypto/tls: a Go client (tests/go-client, standard library only, built here with the
//! machine's Go) calls the mock server over HTTP/1.1 and HTTP/2, as a plain build, a stripped
//! one (`-ldflags "-s -w"`: no symbols, functions found through `.gopclntab`) and one without
//! section headers at all (the tables found by their magic numbers).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use observer_e2e::{TestEnv, assert_same_spans, expected_calls};

/// Sequential JSON and streamed calls, a request body over 100 KiB (written in several Write
/// calls, copied in 16 KiB chunks), a streamed reply over 64 KiB, then concurrent goroutines.
const SCENARIOS: &[&str] = &[
    "chat_json",
    "chat_stream",
    "chat_big_request",
    "chat_stream_big",
    "parallel4:chat_json",
    "parallel4:chat_stream",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Build {
    Plain,
    /// `-ldflags "-s -w"`: no symbol table, no DWARF.
    Stripped,
    /// The stripped build with its section headers removed.
    NoSectionHeaders,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds the client with the machine's `go` (`cargo xtask test` installs Debian's golang-go),
/// offline: the cache, GOPATH and outputs stay under target/.
fn build_client(build: Build) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let out = repo_root().join("target/go-client");
    let dir = BUILT.get_or_init(|| {
        std::fs::create_dir_all(&out).expect("create target/go-client");
        for (name, ldflags) in [("go-client", ""), ("go-client-stripped", "-s -w")] {
            let status = Command::new("go")
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("go-client"))
                .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
                .arg(out.join(name))
                .arg(".")
                .env("GOCACHE", out.join("cache"))
                .env("GOPATH", out.join("gopath"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .env("GOTOOLCHAIN", "local")
                .env("CGO_ENABLED", "0")
                .status()
                .unwrap_or_else(|e| {
                    panic!("cannot run `go` ({e}): install Go (apt-get install golang-go, or cargo xtask test)")
                });
            assert!(status.success(), "building the Go client failed: {status}");
        }
        let mut elf = std::fs::read(out.join("go-client-stripped")).expect("read the build");
        remove_section_headers(&mut elf);
        let path = out.join("go-client-noshdr");
        std::fs::write(&path, elf).expect("write the build");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        out.clone()
    });
    dir.join(match build {
        Build::Plain => "go-client",
        Build::Stripped => "go-client-stripped",
        Build::NoSectionHeaders => "go-client-noshdr",
    })
}

/// Zeroes e_shoff, e_shnum and e_shstrndx of a 64-bit ELF: the program still runs (the loader
/// reads segments only) but no tool can name its sections.
fn remove_section_headers(elf: &mut [u8]) {
    assert_eq!(&elf[..5], b"\x7fELF\x02", "expected a 64-bit ELF");
    elf[0x28..0x30].fill(0);
    elf[0x3c..0x40].fill(0);
}

/// Runs the client under the observer and checks every call against its span, field by field
/// (model, tokens, finish reason, text, stream flag, pid, executable), that the spans say the
/// bytes came from Go's TLS, and that replaying the recording gives the same spans.
fn check(build: Build, version: &str) {
    let env = TestEnv::new();
    let client = build_client(build);
    let calls = expected_calls(SCENARIOS);
    let mut command = vec![client.display().to_string(), version.to_owned()];
    command.extend(SCENARIOS.iter().map(|s| s.to_string()));
    let run = env.check_command(&command, calls, true);
    let (proto, server_version) = match version {
        "http1" => ("HTTP/1.1", "http/1.1"),
        _ => ("HTTP/2.0", "h2"),
    };
    for call in &run.calls {
        assert_eq!(
            call.0["proto"], proto,
            "test setup: the client was meant to speak {proto}: {}",
            call.0
        );
    }
    let served = env.server.requests();
    assert!(
        served.len() == calls && served.iter().all(|r| r["version"] == server_version),
        "test setup: the server was meant to see {calls} {server_version} requests, saw {served:?}"
    );
    for span in &run.spans {
        assert_eq!(
            span.str("observer.tls.library"),
            Some("go"),
            "the Go client's bytes come through crypto/tls: {span}"
        );
    }
    let bounds_from = match build {
        Build::Plain => "bounds from .symtab",
        _ => "bounds from .gopclntab",
    };
    let attached = "Go crypto/tls probes (go1.";
    assert!(
        run.stderr.lines().any(|l| l.contains(attached)
            && l.contains(bounds_from)
            && l.contains(&*client.to_string_lossy())),
        "the observer did not report attaching to {} with {bounds_from}:\n{}",
        client.display(),
        run.stderr
    );
    let conns = env.connections(&run.calls);
    if version == "http2" {
        // Every call after the first connection exists multiplexes onto it.
        let later: Vec<_> = conns[1..].iter().collect();
        assert!(
            later.iter().all(|c| c.is_some() && *c == later[0]),
            "test setup: HTTP/2 calls were meant to share one connection, server saw {conns:?}"
        );
    }
    assert_same_spans(&run.spans, &run.replay(env.dir()));
}

#[test]
fn go_http1_plain_build() {
    check(Build::Plain, "http1");
}

#[test]
fn go_http2_plain_build() {
    check(Build::Plain, "http2");
}

#[test]
fn go_http1_stripped_build() {
    check(Build::Stripped, "http1");
}

#[test]
fn go_http2_build_without_section_headers() {
    check(Build::NoSectionHeaders, "http2");
}
