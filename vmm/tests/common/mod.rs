//! Shared by the integration tests: a runtime in a temporary `$WRENN_DIR`
//! with its own slot range, a guard that cleans everything up even when a
//! test fails, listings of every kind of kernel object a sandbox creates, and
//! a gRPC client for the real guest agent.
#![allow(dead_code)]

pub mod guest;
pub mod leftovers;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wrenn_vmm::{Backend, Runtime, RuntimeConfig, SandboxHandle, SandboxId, SandboxSpec};

/// Prefix of the vmm test suite (docs/DEVELOPING.md).
pub const PREFIX: &str = "wrenn-tv";

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the vmm integration tests need root (namespaces, mounts, cgroups, netlink); CI runs them as root"
    );
}

/// The static guest agent: `WRENN_GUEST_BIN`, else the newest of the
/// workspace's musl release/debug builds.
pub fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WRENN_GUEST_BIN") {
        return PathBuf::from(p);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-musl");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("wrenn-guest"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "wrenn-guest not found under {}: build it with `cargo build -p wrenn-guest --target x86_64-unknown-linux-musl`",
            target.display()
        )
    })
}

pub fn config(dir: &Path, slots: RangeInclusive<u16>) -> RuntimeConfig {
    RuntimeConfig {
        backend: Backend::Namespace,
        dir: dir.to_owned(),
        prefix: PREFIX.into(),
        slots,
        guest_bin: guest_bin(),
        firecracker_bin: PathBuf::from(RuntimeConfig::DEFAULT_FIRECRACKER_BIN),
        kernel: None,
        unhardened: false,
    }
}

/// A runtime over its own `$WRENN_DIR` holding the busybox template.
/// Dropping it (also on panic) removes every sandbox and kernel object of its
/// slot range through a fresh runtime's adopt-or-clean, then the directory.
/// The directory is named after the slot range, so a run that was killed
/// before its guard ran is cleaned up by the next run of the same test.
pub struct Env {
    pub runtime: Arc<dyn Runtime>,
    pub cfg: RuntimeConfig,
    dir: PathBuf,
}

/// `/var/tmp/wrenn-tv/<first>-<last>`.
pub fn env_dir(slots: &RangeInclusive<u16>) -> PathBuf {
    PathBuf::from(format!(
        "/var/tmp/{PREFIX}/{}-{}",
        slots.start(),
        slots.end()
    ))
}

impl Env {
    /// Cleans what a killed earlier run left, builds the runtime and runs its
    /// start-up recovery, like the agent.
    pub async fn new(slots: RangeInclusive<u16>) -> Env {
        require_root();
        let dir = env_dir(&slots);
        if dir.exists() {
            clean(config(&dir, slots.clone())).await;
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        wrenn_vmm::image::build_busybox(&dir, wrenn_vmm::image::BUSYBOX_TEMPLATE).unwrap();
        let cfg = config(&dir, slots);
        let runtime = wrenn_vmm::build(cfg.clone()).unwrap();
        let recovered = runtime.recover().await.unwrap();
        assert!(
            recovered.adopted.is_empty(),
            "a fresh directory adopts nothing"
        );
        Env { runtime, cfg, dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn slots(&self) -> RangeInclusive<u16> {
        self.cfg.slots.clone()
    }

    /// A busybox spec with small limits.
    pub fn spec(&self, id: &str) -> SandboxSpec {
        SandboxSpec {
            id: id.parse().unwrap(),
            template: "busybox".into(),
            vcpus: 1,
            memory_mb: 128,
            disk_mb: 256,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: false,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
            envd_access_token: String::new(),
        }
    }

    /// create + start + wait until the guest's health service answers.
    pub async fn up(&self, spec: SandboxSpec) -> SandboxHandle {
        let id = spec.id.clone();
        let h = self.runtime.create(spec).await.unwrap();
        self.runtime.start(&id).await.unwrap();
        if let Err(e) = guest::wait_healthy(h.guest_addr, Duration::from_secs(20)).await {
            panic!(
                "guest of {id} never became healthy: {e}\n--- guest.log ---\n{}",
                self.runtime.guest_output(&id, 4000).unwrap_or_default()
            );
        }
        h
    }

    /// Destroys everything and shuts the runtime down (the normal end of a test).
    pub async fn finish(&self) {
        for h in self.runtime.list() {
            self.runtime.destroy(&h.id).await.unwrap();
        }
        self.runtime
            .shutdown(Duration::from_secs(30))
            .await
            .unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let cfg = self.cfg.clone();
        let dir = self.dir.clone();
        // A fresh runtime on its own thread: the test's tokio runtime may be
        // unwinding. Recovery adopts what still runs; destroy removes it.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(clean(cfg));
            std::fs::remove_dir_all(&dir).unwrap();
            // The suite's parent directory goes with its last test.
            let _ = std::fs::remove_dir(dir.parent().unwrap());
        });
        if cleanup.join().is_err() && !std::thread::panicking() {
            panic!("cleaning up the test environment failed");
        }
    }
}

/// Adopt-or-clean with a fresh runtime, destroy what was adopted, shut down.
pub async fn clean(cfg: RuntimeConfig) {
    let runtime = wrenn_vmm::build(cfg).expect("cleanup runtime");
    let recovered = runtime.recover().await.expect("cleanup recover");
    for h in recovered.adopted {
        runtime.destroy(&h.id).await.expect("cleanup destroy");
    }
    runtime
        .shutdown(Duration::from_secs(30))
        .await
        .expect("cleanup shutdown");
}

/// Ids unique within a test run.
pub fn id(prefix: &str, n: usize) -> SandboxId {
    format!("{prefix}{n}").parse().unwrap()
}
