//! End-to-end environment over the real namespace runtime: a `$WRENN_DIR`
//! per slot range (`/var/tmp/wrenn-ta/<first>-<last>`) holding the busybox
//! template, and listings of every kernel object a sandbox creates, read
//! independently of the runtime (`/run/netns`, `ip -o link`, mountinfo,
//! `/sys/block/loop*`, cgroupfs, `/proc`, the sandbox directories, `nft`).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wrenn_agent::AgentConfig;
use wrenn_vmm::{Backend, RuntimeConfig};

/// Prefix of the agent test suite (docs/DEVELOPING.md).
pub const PREFIX: &str = "wrenn-ta";

/// A `$WRENN_DIR` for one slot range. Dropping it (also on panic) removes
/// every sandbox and kernel object of the range through a fresh runtime's
/// adopt-or-clean, then the directory. Named after the slot range, so a run
/// killed before its guard ran is cleaned up by the next run of that test.
pub struct HostEnv {
    pub dir: PathBuf,
    pub slots: RangeInclusive<u16>,
}

impl HostEnv {
    pub async fn new(slots: RangeInclusive<u16>) -> HostEnv {
        super::assert_root();
        super::init_logs();
        let dir = PathBuf::from(format!(
            "/var/tmp/{PREFIX}/{}-{}",
            slots.start(),
            slots.end()
        ));
        let env = HostEnv { dir, slots };
        if env.dir.exists() {
            clean(env.runtime_config()).await;
            std::fs::remove_dir_all(&env.dir).unwrap();
        }
        std::fs::create_dir_all(&env.dir).unwrap();
        wrenn_vmm::image::build_busybox(&env.dir, wrenn_vmm::image::BUSYBOX_TEMPLATE).unwrap();
        env
    }

    /// An agent configuration for this environment (busybox, no base build).
    pub fn config(&self) -> AgentConfig {
        let mut c = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: self.dir.clone(),
            host_id: "test-host".into(),
            reserve_memory_mb: 0,
            reserve_disk_mb: 0,
            build_base_image: false,
            shutdown_timeout_secs: 60,
            ..Default::default()
        };
        c.runtime.prefix = PREFIX.into();
        c.runtime.slot_first = *self.slots.start();
        c.runtime.slot_last = *self.slots.end();
        c.runtime.guest_bin = Some(super::guest_bin());
        c
    }

    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            backend: Backend::Namespace,
            dir: self.dir.clone(),
            prefix: PREFIX.into(),
            slots: self.slots.clone(),
            guest_bin: super::guest_bin(),
            firecracker_bin: PathBuf::from(RuntimeConfig::DEFAULT_FIRECRACKER_BIN),
            kernel: None,
            unhardened: false,
        }
    }

    /// Everything this environment holds on the host: every object of its
    /// slot range, every mount and loop device under its directory, every
    /// sandbox cgroup, process and directory, its nftables table.
    pub fn leftovers(&self) -> Snapshot {
        take(&Filter::All, &self.dir, &self.slots)
    }

    /// What sandbox `id` at `address` still holds on the host.
    pub fn sandbox_leftovers(&self, id: &str, address: &str) -> Snapshot {
        let slot = slot_of(address);
        take(&Filter::Sandbox(id), &self.dir, &(slot..=slot))
    }

    pub async fn assert_clean(&self) {
        poll_empty(|| self.leftovers()).await;
    }

    /// Nothing of any sandbox is left; the runtime's own objects (its
    /// nftables table, its mount directory) may be, while it runs.
    pub async fn assert_no_sandboxes(&self) {
        poll_empty(|| {
            let mut s = self.leftovers();
            s.nft_tables.clear();
            s.dirs.retain(|d| !d.starts_with("mnt/"));
            s
        })
        .await;
    }

    pub async fn assert_sandbox_gone(&self, id: &str, address: &str) {
        poll_empty(|| self.sandbox_leftovers(id, address)).await;
    }
}

/// Polls until `snap` is empty (the kernel frees some objects, like autoclear
/// loop devices, just after their last user goes).
async fn poll_empty(snap: impl Fn() -> Snapshot) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = snap();
        if s.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The slot an address belongs to (sandbox end = 10.210.0.0 + 2s + 1).
pub fn slot_of(address: &str) -> u16 {
    let ip: std::net::Ipv4Addr = address.parse().unwrap();
    let base = u32::from(std::net::Ipv4Addr::new(10, 210, 0, 0));
    u16::try_from((u32::from(ip) - base - 1) / 2).unwrap()
}

impl Drop for HostEnv {
    fn drop(&mut self) {
        let cfg = self.runtime_config();
        let dir = self.dir.clone();
        // A fresh runtime on its own thread: the test's runtime may be unwinding.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(clean(cfg));
            std::fs::remove_dir_all(&dir).unwrap();
            let _ = std::fs::remove_dir(dir.parent().unwrap());
        });
        if cleanup.join().is_err() && !std::thread::panicking() {
            panic!("cleaning up the test environment failed");
        }
    }
}

/// Adopt-or-clean with a fresh runtime, destroy what was adopted, shut down.
async fn clean(cfg: RuntimeConfig) {
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

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub netns: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
    pub loops: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    pub processes: BTreeSet<String>,
    pub dirs: BTreeSet<String>,
    pub nft_tables: BTreeSet<String>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        *self == Snapshot::default()
    }
}

fn in_range(n: &str, slots: &RangeInclusive<u16>) -> bool {
    n.parse::<u16>().is_ok_and(|s| slots.contains(&s))
}

enum Filter<'a> {
    All,
    Sandbox(&'a str),
}

impl Filter<'_> {
    /// Whether a path under the environment's directory belongs.
    fn path(&self, p: &str, dir: &str) -> bool {
        match self {
            Filter::All => p.starts_with(dir),
            Filter::Sandbox(id) => p.starts_with(dir) && p.contains(&format!("/{id}")),
        }
    }

    fn id(&self, name: &str) -> bool {
        match self {
            Filter::All => wrenn_types::SandboxId::is_valid(name),
            Filter::Sandbox(id) => name == *id,
        }
    }
}

fn take(f: &Filter<'_>, dir: &Path, slots: &RangeInclusive<u16>) -> Snapshot {
    let mut s = Snapshot::default();
    let ns_prefix = format!("{PREFIX}-");
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name
            .strip_prefix(&ns_prefix)
            .is_some_and(|n| in_range(n, slots))
        {
            s.netns.insert(name);
        }
    }
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line
            .split(':')
            .nth(1)
            .unwrap_or("")
            .trim()
            .split('@')
            .next()
            .unwrap_or("");
        if name.strip_prefix("wv").is_some_and(|n| in_range(n, slots)) {
            s.links.insert(name.to_owned());
        }
    }
    let dir_s = dir.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4).is_some_and(|m| f.path(m, &dir_s)) {
            s.mounts.insert(fields[4].to_owned());
        }
    }
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file"))
            && f.path(b.trim(), &dir_s)
        {
            s.loops
                .insert(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
        }
    }
    let layout = wrenn_vmm::cgroup::Layout::detect().unwrap();
    for root in layout.roots() {
        for e in std::fs::read_dir(root.join(PREFIX))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) && f.id(&name) {
                s.cgroups.insert(e.path().display().to_string());
            }
        }
    }
    let needle = format!("/{PREFIX}/");
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        // `<hierarchy>:<controllers>:/wrenn-ta/<id>[/...]`
        let ours = cg.lines().any(|l| {
            l.split_once(&needle)
                .and_then(|(_, rest)| rest.split('/').next())
                .is_some_and(|id| f.id(id))
        });
        if ours {
            s.processes.insert(format!("pid {pid}"));
        }
    }
    for sub in ["sandboxes", "mnt"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if matches!(f, Filter::All) || f.id(&name) {
                s.dirs.insert(format!("{sub}/{name}"));
            }
        }
    }
    if matches!(f, Filter::All) {
        let table = format!(
            "{}_{}_{}",
            PREFIX.replace('-', "_"),
            slots.start(),
            slots.end()
        );
        let out = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == format!("table ip {table}"))
        {
            s.nft_tables.insert(table);
        }
    }
    s
}
