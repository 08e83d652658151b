//! Go's crypto/tls: a Go client (tests/go-client, standard library only, built here with the
//! machine's Go) calls the mock server over HTTP/1.1 and HTTP/2, as a plain build, a stripped
//! one (`-ldflags "-s -w"`: no symbols, functions found through `.gopclntab`) and one without
//! section headers at all (the tables found by their magic numbers).

use observer_e2e::go_client::{Build, build_client, write_executable};
use observer_e2e::{TestEnv, assert_plaintext_calls, assert_same_spans, expected_calls};

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
    for span in run.spans.iter().filter(|s| s.is_call()) {
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

/// A Go program whose build info says Go 1.16 (stack calling convention) is not probed: the
/// observer says so on stderr, and no span claims to come from it. (The plain build with its
/// recorded version rewritten: the runtime does not read that record.)
#[test]
fn go_before_1_17_is_refused_with_a_message() {
    let env = TestEnv::new();
    let mut elf = std::fs::read(build_client(Build::Plain)).expect("read the build");
    let magic = b"\xff Go buildinf:";
    let at = elf
        .windows(magic.len())
        .position(|w| w == magic)
        .expect("the build has build info");
    // Go >= 1.18 keeps the version inline at offset 32: a length byte, then `go1.NN...`.
    let version = &mut elf[at + 33..at + 39];
    assert!(
        version.starts_with(b"go1.") && version[4..].iter().all(u8::is_ascii_digit),
        "unexpected build info layout: {:?}",
        String::from_utf8_lossy(version)
    );
    version.copy_from_slice(b"go1.16");
    let old = env.dir().join("go-client-go116");
    write_executable(&old, &elf);

    let run = env.capture(
        &[
            old.display().to_string(),
            "http1".into(),
            "chat_json".into(),
        ],
        false,
    );
    assert_eq!(
        run.calls.len(),
        1,
        "the client itself must still work:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("not capturing TLS of the Go program")
                && l.contains("go1.16")
                && l.contains("before 1.17")),
        "the observer did not say why it skips the program:\n{}",
        run.stderr
    );
    let pid = run.calls[0].pid() as u32;
    assert_eq!(
        run.spans_of(pid),
        vec![],
        "no span may come from an unprobed program"
    );
}

/// Plaintext HTTP from Go (how the `ollama` CLI reaches a local server): Go makes its socket
/// calls without the C library, so they are seen at `internal/poll.(*FD)`, its read loop
/// waiting on the socket before the request is written.
#[test]
fn go_plaintext_http() {
    let env = TestEnv::plaintext();
    let client = build_client(Build::Stripped);
    let scenarios = ["chat_json", "chat_stream", "parallel4:chat_json"];
    let mut command = vec![client.display().to_string(), "http1".to_owned()];
    command.extend(scenarios.iter().map(|s| s.to_string()));
    let run = env.check_command(&command, expected_calls(&scenarios), false);
    assert_plaintext_calls(&run.spans, env.server.port);
}
