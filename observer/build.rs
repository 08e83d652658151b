//! Builds the eBPF probes (`observer-ebpf`, BPF target) during a normal `cargo build`.
use std::process::Command;

/// Must match `rust-toolchain.toml`: bpf-linker is built against this toolchain's LLVM.
const EBPF_TOOLCHAIN: &str = "1.95.0";

fn main() -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        anyhow::bail!(
            "bpf-linker is not installed: run `cargo xtask setup` (it builds bpf-linker against \
             the pinned toolchain's LLVM), then build again"
        );
    }
    let metadata = cargo_metadata_dir()?;
    let ebpf = aya_build::Package {
        name: "observer-ebpf",
        root_dir: &metadata,
        ..Default::default()
    };
    // The nested build needs `-Z build-std=core` on a stable toolchain.
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}

fn cargo_metadata_dir() -> anyhow::Result<String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let dir = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("observer crate has no parent directory"))?
        .join("observer-ebpf");
    Ok(dir.to_string_lossy().into_owned())
}
