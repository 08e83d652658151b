//! Node's fetch, whose OpenSSL is inside the node executable with its symbols: Debian's node and
//! an official static build (PyPI's nodejs-bin).

use std::path::PathBuf;

use observer_e2e::{
    TestEnv,
    harness::{clients_dir, python},
};

fn node_calls(node: PathBuf) {
    let env = TestEnv::new();
    let scenarios = ["chat_json", "chat_sse", "messages_json", "messages_sse"];
    let mut argv = vec![
        node.display().to_string(),
        clients_dir().join("bun_calls.js").display().to_string(),
    ];
    argv.extend(scenarios.iter().map(|s| s.to_string()));
    let ca = env.server.ca.display().to_string();
    let run = env.check_command_with_env(
        &[("NODE_EXTRA_CA_CERTS", ca.as_str())],
        &argv,
        observer_e2e::expected_calls(&scenarios),
        false,
    );
    for span in run.spans.iter().filter(|s| s.is_call()) {
        assert_eq!(span.str("observer.tls.library"), Some("openssl"), "{span}");
        assert_eq!(span.str("process.executable.name"), Some("node"), "{span}");
    }
}

#[test]
fn debian_node_fetch() {
    node_calls(PathBuf::from("/usr/bin/node"));
}

/// The official Linux build of Node 18 from PyPI's nodejs-bin (tests/requirements.txt).
#[test]
fn official_static_node_fetch() {
    let venv = python()
        .parent()
        .and_then(|bin| bin.parent())
        .expect("the venv of the test clients")
        .to_path_buf();
    let node = std::fs::read_dir(venv.join("lib"))
        .expect("the venv's lib directory")
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/nodejs/bin/node"))
        .find(|node| node.is_file())
        .expect("nodejs-bin's node in the test venv (tests/requirements.txt)");
    node_calls(node);
}
