//! The `kassa` executable the benchmarks start as child processes (`kassa ingress`, `kassa worker`,
//! `kassa charges import`, `kassa dlq replay`), so they measure the product as it ships.
//!
//! A benchmark must measure the code as it is now. Under cargo (`cargo run -p kassa-bench`, or a
//! test of this crate) kassa-bench first has cargo bring `kassa` up to date in its own profile and
//! target directory, which costs nothing when nothing changed. A path given with `--kassa-bin` /
//! `KASSA_BIN` is taken as it is; otherwise the `kassa` beside kassa-bench.

use anyhow::{bail, Context};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `kassa` executable to start: `given`, else the one beside this executable (built first
/// when running under cargo).
pub fn locate(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return existing(path.to_owned(), "--kassa-bin / KASSA_BIN");
    }
    let own = std::env::current_exe().context("locating kassa-bench's own executable")?;
    let beside = own.with_file_name(format!("kassa{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        build_with_cargo(&cargo, &own)?;
    }
    existing(
        beside,
        "build it with `cargo build --release -p kassa`, or name it with --kassa-bin",
    )
}

fn existing(path: PathBuf, hint: &str) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!("no kassa executable at {} ({hint})", path.display());
    }
    Ok(path)
}

/// `cargo build -p kassa --bin kassa` into the profile and target directory kassa-bench itself
/// was built in (`target/<profile>/kassa-bench`; the dev profile's directory is `debug`).
fn build_with_cargo(cargo: &OsStr, own: &Path) -> anyhow::Result<()> {
    let profile_dir = own.parent().context("kassa-bench's directory")?;
    let target_dir = profile_dir
        .parent()
        .context("kassa-bench's target directory")?;
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => "dev",
        Some(name) => name,
        None => bail!("kassa-bench runs from {}", profile_dir.display()),
    };
    eprintln!("kassa-bench: bringing the kassa binary up to date (cargo build --profile {profile} -p kassa --bin kassa)");
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--quiet",
            "--profile",
            profile,
            "-p",
            "kassa",
            "--bin",
            "kassa",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    // Cargo sets the manifest directory for what it runs: build in the same workspace.
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        command.current_dir(dir);
    }
    let status = command.status().context("running cargo build for kassa")?;
    if !status.success() {
        bail!("cargo build -p kassa --bin kassa failed ({status})");
    }
    Ok(())
}
