//! Project tasks: `cargo xtask setup | capture | test`.
//!
//! Everything a fresh machine lacks is installed here, idempotently, so the README's two
//! commands work on a new machine and cost nothing once it is set up.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Programs from npm the end-to-end tests run: Bun and the Claude Code CLI (a Bun-compiled
/// executable), both with BoringSSL and no symbols, the Codex CLI (a static musl executable
/// with rustls and no symbols, in its platform package), the official OpenAI and Anthropic
/// Node SDKs (run by Debian's node), and playwright-core, which drives Debian's chromium for
/// the web view's test (it downloads no browser of its own). Installed under target/npm.
const NPM_TEST_PROGRAMS: &[&str] = &[
    "bun@1.4.5",
    "@anthropic-ai/claude-code@2.1.197",
    "@openai/codex@0.171.0",
    "openai@7.60.0",
    "@anthropic-ai/sdk@1.17.0",
    "playwright-core@1.65.2",
];

#[derive(Parser)]
#[command(about = "Project tasks for the LLM call observer")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (rust-src, bpf-linker, npm test programs)
    /// if missing.
    Setup,
    /// Set up, build, and run `observer capture` with the given arguments (needs root).
    Capture {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test: unit, replay, and eBPF end-to-end (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let root = workspace_root()?;
    match Cli::parse().task {
        Task::Setup => {
            setup()?;
            npm_programs(&root)
        }
        Task::Capture { args } => {
            setup()?;
            build(&root)?;
            let status = Command::new(root.join("target/release/observer"))
                .arg("capture")
                .args(args)
                .status()
                .context("running the observer")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { args } => {
            setup()?;
            python_env(&root)?;
            go_toolchain()?;
            chromium()?;
            npm_programs(&root)?;
            build(&root)?;
            stripped_client(&root)?;
            // A filtered run is someone chasing one test, not the whole suite.
            if args.is_empty() {
                lint(&root)?;
            }
            step("running the tests (unit, replay, eBPF end-to-end)");
            let cargo_test = |extra: &[String]| {
                let mut cargo = Command::new("cargo");
                cargo
                    .current_dir(&root)
                    .args(["test", "--release", "--no-fail-fast"])
                    .args(HOST_CRATES)
                    .args(extra)
                    .env("OBSERVER_BIN", root.join("target/release/observer"))
                    .env("OBSERVER_E2E_PYTHON", root.join(".venv/bin/python"))
                    .env("OBSERVER_PHOENIX", root.join(".venv-phoenix/bin/phoenix"));
                cargo
            };
            let mut tests = run_counting_tests(&mut cargo_test(&args))?;
            let mut flaky = Vec::new();
            // A few failures in a whole run are retried once, alone: a test that then passes
            // is named as flaky (and is a bug to fix), not counted as a failure.
            if args.is_empty() && (1..=MAX_RETRIED).contains(&tests.failures.len()) {
                let names: Vec<String> = tests.failures.iter().map(|f| f.name.clone()).collect();
                step(&format!(
                    "retrying the failed tests once: {}",
                    names.join(", ")
                ));
                let mut filter = vec!["--".to_string(), "--exact".to_string()];
                filter.extend(names.iter().cloned());
                let retried = run_counting_tests(&mut cargo_test(&filter))?;
                // Each must have run again (a name matching nothing would pass vacuously).
                if retried.status.success() && retried.passed >= names.len() as u64 {
                    flaky = std::mem::take(&mut tests.failures);
                    tests.status = retried.status;
                }
            }
            let fuzzed = if args.is_empty() { fuzz(&root) } else { Ok(()) };
            // Repeated last, so the end of a long log (all CI keeps) says what failed.
            report_failures("flaky tests (failed, then passed when retried)", &flaky);
            report_failures("tests failed", &tests.failures);
            if let Err(error) = &fuzzed {
                eprintln!("\x1b[1;31mfuzzing failed:\x1b[0m {error:#}");
            }
            let code = tests.status.code().unwrap_or(1);
            std::process::exit(if code == 0 && fuzzed.is_err() {
                1
            } else {
                code
            });
        }
    }
}

/// The cargo-fuzz targets in `fuzz/` (see fuzz/src/lib.rs for what each drives).
const FUZZ_TARGETS: &[&str] = &[
    "http1",
    "http2",
    "providers",
    "framings",
    "elf",
    "go",
    "boringssl",
    "rustls",
    "symbols",
];
/// How long each target runs by default in `cargo xtask test`; OBSERVER_FUZZ_SECONDS
/// overrides it; 0 still builds the targets (so they keep up with the code) but runs none.
const FUZZ_SECONDS: u64 = 25;
/// How the targets are built, for `cargo fuzz build` and `run` alike (different flags would
/// rebuild): optimised with overflow checks and debug assertions; no sanitizer (the parsers are
/// safe Rust; AddressSanitizer would slow the build and every run, and fuzz/src/bounded_heap.rs
/// bounds memory instead); 16 codegen units rather than cargo-fuzz's 1, for a faster build.
const FUZZ_BUILD: &[&str] = &["-O", "-a", "-s", "none", "--codegen-units", "16"];
/// What counts as a bug besides a panic: an input running over 10 s, or the process's memory
/// over 2 GiB (the fuzz crate's allocator also fails the heap past 1 GiB), with inputs up to
/// 64 KiB.
const LIBFUZZER_LIMITS: &[&str] = &[
    "-timeout=10",
    "-rss_limit_mb=2048",
    "-max_len=65536",
    "-print_final_stats=1",
];

/// Builds every fuzz target once, then runs each for a while; every target runs even after
/// one fails, and the failures are named with where their inputs were saved.
fn fuzz(root: &Path) -> Result<()> {
    let seconds = match std::env::var("OBSERVER_FUZZ_SECONDS") {
        Ok(value) => value
            .parse()
            .context("OBSERVER_FUZZ_SECONDS must be a number of seconds")?,
        Err(_) => FUZZ_SECONDS,
    };
    if !Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
    {
        step("installing cargo-fuzz");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let fuzz_dir = root.join("fuzz");
    // libFuzzer's instrumentation needs unstable rustc flags: allowed on the pinned stable
    // toolchain for these builds only.
    let cargo_fuzz = |args: &[&str]| {
        let mut command = Command::new("cargo");
        command
            .current_dir(&fuzz_dir)
            .arg("fuzz")
            .args(args)
            .env("RUSTC_BOOTSTRAP", "1");
        command
    };
    step("building the fuzz targets (instrumented, in fuzz/target)");
    run(cargo_fuzz(&["build"]).args(FUZZ_BUILD))?;
    if seconds == 0 {
        return Ok(());
    }
    // libFuzzer prints a line per new input: each target's output goes to its own log, and
    // the test log keeps one line per target (and the log's end when it failed).
    let logs = fuzz_dir.join("target/logs");
    std::fs::create_dir_all(&logs)?;
    let mut failed = Vec::new();
    for target in FUZZ_TARGETS {
        step(&format!("fuzzing {target} for {seconds} s"));
        let log_path = logs.join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let status = cargo_fuzz(&["run"])
            .args(FUZZ_BUILD)
            .args([target, "--"])
            .args(LIBFUZZER_LIMITS)
            .arg(format!("-max_total_time={seconds}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("running cargo fuzz run {target}"))?;
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        if status.success() {
            let done = output.lines().rev().find(|l| l.starts_with("Done "));
            println!(
                "{target}: clean ({})",
                done.unwrap_or("no libFuzzer summary")
            );
        } else {
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            println!(
                "{target}: FAILED ({status}); end of {}:",
                log_path.display()
            );
            for line in tail {
                println!("    {line}");
            }
            failed.push(*target);
        }
    }
    if !failed.is_empty() {
        let found = failed
            .iter()
            .map(|t| format!("{t} (input in fuzz/artifacts/{t}/)"))
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "a panic, hang or memory blow-up in {found}; replay one with \
             `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {} TARGET artifacts/TARGET/FILE`",
            FUZZ_BUILD.join(" ")
        );
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("\x1b[1m==> {what}\x1b[0m");
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = env!("CARGO_MANIFEST_DIR");
    Ok(Path::new(manifest)
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// The toolchain pinned in rust-toolchain.toml, as rustup resolved it for this run (`cargo
/// xtask` runs through rustup's proxy, which names it): bpf-linker is built against its LLVM.
fn toolchain() -> Result<String> {
    std::env::var("RUSTUP_TOOLCHAIN").context(
        "RUSTUP_TOOLCHAIN is not set: run `cargo xtask` with Rust installed through rustup, which \
         reads the pin in rust-toolchain.toml",
    )
}

fn setup() -> Result<()> {
    let toolchain = toolchain()?;
    if !rustup_has_component(&toolchain, "rust-src")? {
        step(&format!(
            "installing rust-src for toolchain {toolchain} (the eBPF build compiles core)"
        ));
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain,
        ]))?;
    }
    if !bpf_linker_ready() {
        step(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against rustc {toolchain}'s LLVM (about a minute)"
        ));
        install_bpf_linker(&toolchain)?;
    }
    Ok(())
}

fn rustup_has_component(toolchain: &str, component: &str) -> Result<bool> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .context("running rustup: is Rust installed through rustup?")?;
    if !out.status.success() {
        bail!(
            "toolchain {toolchain} is missing: run `rustup toolchain install {toolchain} --component rust-src`"
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with(component)))
}

fn bpf_linker_ready() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION))
}

/// Links bpf-linker against the toolchain's own libLLVM, so its LLVM always matches rustc's.
fn install_bpf_linker(toolchain: &str) -> Result<()> {
    let sysroot =
        output(Command::new("rustc").args([&format!("+{toolchain}"), "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("libLLVM") && name.ends_with(".so"))
        .with_context(|| format!("no libLLVM*.so in {}", lib_dir.display()))?;
    let lib = lib_dir.display();
    let rustflags =
        format!("-C link-arg=-L{lib} -C link-arg=-l:{llvm} -C link-arg=-Wl,-rpath,{lib}");
    run(Command::new("cargo")
        .args([
            &format!("+{toolchain}"),
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22,no-llvm-linking",
        ])
        .env("RUSTFLAGS", rustflags))
}

/// Every crate built for the host: the observer and the end-to-end tests with their programs
/// (the eBPF crate is built for the BPF target by observer/build.rs).
const HOST_CRATES: &[&str] = &["--workspace", "--exclude", "observer-ebpf"];

fn build(root: &Path) -> Result<()> {
    step(
        "building the observer and the test programs (release; the eBPF probes are built by observer/build.rs)",
    );
    run(Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release"])
        .args(HOST_CRATES))
}

/// The reqwest test client built as release builds of Rust programs ship (fat LTO, no symbols;
/// the Cargo profile `stripped-lto`), for the test of rustls found without symbols.
fn stripped_client(root: &Path) -> Result<()> {
    step("building the stripped LTO rustls test client (profile stripped-lto)");
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "--profile",
        "stripped-lto",
        "-p",
        "rustls-client",
    ]))
}

/// The code as the house keeps it: formatted, and clean under clippy.
fn lint(root: &Path) -> Result<()> {
    step("checking formatting (cargo fmt) and lints (cargo clippy)");
    run(Command::new("cargo")
        .current_dir(root)
        .args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo")
        .current_dir(root)
        .args(["clippy", "--release", "--all-targets"])
        .args(HOST_CRATES)
        .args(["--", "-D", "warnings"]))
}

/// The real SDK clients the end-to-end tests run, in a virtualenv at .venv; Arize Phoenix, the
/// OTLP backend of the export test, in one of its own (it brings many packages).
fn python_env(root: &Path) -> Result<()> {
    virtualenv(root, ".venv", "tests/requirements.txt", "the SDK clients")?;
    virtualenv(
        root,
        ".venv-phoenix",
        "tests/requirements-phoenix.txt",
        "Arize Phoenix (several minutes the first time)",
    )
}

/// A virtualenv at `dir` with `requirements` installed, reinstalled when the file changes.
fn virtualenv(root: &Path, dir: &str, requirements: &str, what: &str) -> Result<()> {
    let venv = root.join(dir);
    let python = venv.join("bin/python");
    if !python.exists() {
        step(&format!(
            "creating the Python virtualenv for {what} ({dir})"
        ));
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let requirements = root.join(requirements);
    let stamp = venv.join(".requirements-installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap_or_default();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        step(&format!("installing {what} ({})", requirements.display()));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements))?;
        std::fs::write(&stamp, wanted)?;
    }
    Ok(())
}

/// Go, for the Go client the end-to-end tests build (tests/go-client): Debian's golang-go.
fn go_toolchain() -> Result<()> {
    if Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        return Ok(());
    }
    step("installing Go (Debian's golang-go) for the Go client of the end-to-end tests");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "golang-go"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Debian's chromium, the browser the web view's end-to-end test drives (headless).
fn chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").is_file() {
        return Ok(());
    }
    step("installing chromium (Debian's) for the web view's browser test");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The npm programs the end-to-end tests run, in target/npm (install scripts are not needed:
/// the packages ship their executables).
fn npm_programs(root: &Path) -> Result<()> {
    let prefix = root.join("target/npm");
    let stamp = prefix.join(".installed");
    let wanted = NPM_TEST_PROGRAMS.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    step(&format!(
        "installing the npm test programs into target/npm ({})",
        NPM_TEST_PROGRAMS.join(", ")
    ));
    std::fs::create_dir_all(&prefix)?;
    run(Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--save-exact",
            "--prefix",
        ])
        .arg(&prefix)
        .args(NPM_TEST_PROGRAMS))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

/// What `cargo test` ended with: its status and its failed tests.
struct TestRun {
    status: std::process::ExitStatus,
    passed: u64,
    failures: Vec<Failure>,
}

/// A failed test and its captured output (cargo's "---- name stdout ----" block).
struct Failure {
    name: String,
    output: Vec<String>,
}

/// At most this many failures of a whole run are retried; more is a breakage, not flakiness.
const MAX_RETRIED: usize = 5;

/// Lines shown of one failed test's captured output in the final report: its end, where the
/// panic message is.
const FAILURE_TAIL_LINES: usize = 50;

fn report_failures(title: &str, failures: &[Failure]) {
    if failures.is_empty() {
        return;
    }
    eprintln!("\x1b[1;31m{} {title}:\x1b[0m", failures.len());
    for failure in failures {
        eprintln!("  ---- {} ----", failure.name);
        let tail = failure.output.len().saturating_sub(FAILURE_TAIL_LINES);
        if tail > 0 {
            eprintln!("    [{tail} lines left out]");
        }
        for line in &failure.output[tail..] {
            eprintln!("    {line}");
        }
    }
}

/// Runs `cargo test`, echoing its output, and ends with one line adding up every test binary's
/// result (cargo's own last line speaks only of the last binary, often doc-tests with none).
fn run_counting_tests(command: &mut Command) -> Result<TestRun> {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut failures: Vec<Failure> = Vec::new();
    // Inside a "---- name stdout ----" block of cargo's failure report.
    let mut in_failure = false;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(result) = line.strip_prefix("test result: ") {
                passed += count_before(result, " passed");
                failed += count_before(result, " failed");
            }
            if let Some(name) = line
                .strip_prefix("---- ")
                .and_then(|rest| rest.strip_suffix(" stdout ----"))
            {
                failures.push(Failure {
                    name: name.to_string(),
                    output: Vec::new(),
                });
                in_failure = true;
            } else if line == "failures:" || line.starts_with("test result: ") {
                in_failure = false;
            } else if in_failure && let Some(failure) = failures.last_mut() {
                failure.output.push(line);
            }
        }
    }
    let status = child.wait()?;
    println!("all tests: {passed} passed, {failed} failed");
    Ok(TestRun {
        status,
        passed,
        failures,
    })
}

/// The number just before `label` in "ok. 12 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::{Command, count_before, run_counting_tests};

    #[test]
    fn failed_tests_are_read_from_cargo_output() {
        let output = "running 3 tests\n\
            test a::one ... ok\n\
            test a::two ... FAILED\n\
            test three ... FAILED\n\
            \n\
            failures:\n\
            \n\
            ---- a::two stdout ----\n\
            some output\n\
            thread 'a::two' panicked at src/lib.rs:1:1:\n\
            boom\n\
            \n\
            ---- three stdout ----\n\
            \n\
            failures:\n\
                a::two\n\
                three\n\
            \n\
            test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let run = run_counting_tests(Command::new("printf").arg("%s").arg(output)).unwrap();
        assert_eq!(run.passed, 1);
        let names: Vec<&str> = run.failures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a::two", "three"]);
        assert_eq!(run.failures[0].output[2], "boom");
    }

    #[test]
    fn adds_up_cargo_test_result_lines() {
        let line =
            "FAILED. 95 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.2s";
        assert_eq!(
            (count_before(line, " passed"), count_before(line, " failed")),
            (95, 1)
        );
        assert_eq!(count_before("ok. 0 passed; 0 failed;", " passed"), 0);
    }
}
