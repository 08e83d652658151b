//! Builds the eBPF probes (`observer-ebpf`, BPF target) during a normal `cargo build`.
use std::process::Command;

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
    // The toolchain building this crate, pinned in rust-toolchain.toml (rustup names it): the
    // probes need the same one, whose LLVM bpf-linker was built against.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").map_err(|_| {
        anyhow::anyhow!(
            "RUSTUP_TOOLCHAIN is not set: build with Rust installed through rustup, which reads \
             the pin in rust-toolchain.toml"
        )
    })?;
    let metadata = cargo_metadata_dir()?;
    let ebpf = aya_build::Package {
        name: "observer-ebpf",
        root_dir: &metadata,
        ..Default::default()
    };
    // The nested build needs `-Z build-std=core` on a stable toolchain.
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&toolchain))
}

fn cargo_metadata_dir() -> anyhow::Result<String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let dir = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("observer crate has no parent directory"))?
        .join("observer-ebpf");
    Ok(dir.to_string_lossy().into_owned())
}
