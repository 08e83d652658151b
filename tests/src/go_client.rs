//! The Go client of the end-to-end tests (tests/go-client, standard library only), built with
//! the machine's `go`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::repo_root;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Build {
    Plain,
    /// `-ldflags "-s -w"`: no symbol table, no DWARF.
    Stripped,
    /// The stripped build with its section headers removed.
    NoSectionHeaders,
}

/// Builds the client with the machine's `go` (`cargo xtask test` installs Debian's golang-go),
/// offline: the cache, GOPATH and outputs stay under target/.
pub fn build_client(build: Build) -> PathBuf {
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
        write_executable(&out.join("go-client-noshdr"), &elf);
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

/// Writes a program file, executable.
pub fn write_executable(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
