//! Where the bench finds its binaries and puts its scratch files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context as _, bail};

const MUSL: &str = "x86_64-unknown-linux-musl";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `$var`, else `name` next to this executable, else `target/release/name`.
fn find(var: &str, name: &str, build: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("locating wrenn-bench")?;
    let candidates = [
        exe.with_file_name(name),
        workspace().join("target/release").join(name),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found: build it with `{build}` or set {var}"))
}

/// The `wrenn` binary (`WRENN_BIN`).
pub fn wrenn_bin() -> anyhow::Result<PathBuf> {
    find("WRENN_BIN", "wrenn", "cargo build --release -p wrenn-cli")
}

/// The static guest agent (`WRENN_GUEST_BIN`), as everywhere in wrenn.
pub fn guest_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WRENN_GUEST_BIN") {
        return Ok(p.into());
    }
    let musl = |profile: &str| workspace().join("target").join(MUSL).join(profile);
    [musl("release"), musl("debug")]
        .into_iter()
        .map(|d| d.join("wrenn-guest"))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "wrenn-guest not found: build it with `cargo build --release -p wrenn-guest --target {MUSL}` \
                 or set WRENN_GUEST_BIN"
            )
        })
}

/// The static upstream server that runs inside sandboxes
/// (`WRENN_BENCH_UPSTREAM_BIN`). Without the variable the musl build in
/// `target/` is used, built with cargo first when it is missing or older
/// than its sources (so it runs in any template's rootfs).
pub fn upstream_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WRENN_BENCH_UPSTREAM_BIN") {
        return Ok(p.into());
    }
    let built = workspace()
        .join("target")
        .join(MUSL)
        .join("release/wrenn-bench-upstream");
    let sources = workspace().join("bench/upstream");
    if built.is_file() && !newer_than(&sources, modified(&built)) {
        return Ok(built);
    }
    println!("building the bench upstream for {MUSL}…");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // runs: cargo
    let status = Command::new(&cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--release",
            "-p",
            "wrenn-bench-upstream",
            "--target",
            MUSL,
        ])
        .status();
    match status {
        Ok(s) if s.success() => Ok(built),
        Ok(s) => bail!(
            "building the upstream failed ({s}): cargo build --release -p wrenn-bench-upstream --target {MUSL}"
        ),
        Err(e) => bail!(
            "cannot run cargo to build the upstream ({e}); build it with \
             `cargo build --release -p wrenn-bench-upstream --target {MUSL}` or set WRENN_BENCH_UPSTREAM_BIN"
        ),
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Whether any file under `dir` changed after `than`.
fn newer_than(dir: &Path, than: Option<SystemTime>) -> bool {
    let Some(than) = than else { return true };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            newer_than(&p, Some(than))
        } else {
            modified(&p).is_some_and(|m| m > than)
        }
    })
}

/// A fresh scratch directory for one run of a scenario, under
/// `/var/tmp/wrenn-tb` (not tmpfs: sandbox images live there).
pub fn scratch_dir(scenario: &str) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from("/var/tmp/wrenn-tb").join(format!("{scenario}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
