//! The `Runtime` trait: one interface, one implementation per backend.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use wrenn_types::SandboxId;

/// Which kind of machine a sandbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Namespace,
    Firecracker,
}

/// What to create. Values are validated by [`Runtime::create`] (ranges in
/// [`SandboxSpec`]'s `MIN_*`/`MAX_*` constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    /// Environment of the guest agent, inherited by every process it starts.
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// Egress to the internet (MASQUERADE); otherwise only host-initiated traffic.
    pub internet: bool,
    /// Networks the sandbox may reach even where the default refuses them
    /// (private ranges; everything when `internet` is off).
    pub allow_out: Vec<wrenn_types::Cidr>,
    /// Networks the sandbox may never reach; checked before `allow_out`.
    pub deny_out: Vec<wrenn_types::Cidr>,
}

impl SandboxSpec {
    pub const DEFAULT_TEMPLATE: &'static str = "base";
    pub const DEFAULT_VCPUS: u32 = 1;
    pub const DEFAULT_MEMORY_MB: u32 = 512;
    pub const DEFAULT_DISK_MB: u32 = 2048;
    pub const MAX_VCPUS: u32 = 64;
    pub const MIN_MEMORY_MB: u32 = 32;
    pub const MAX_MEMORY_MB: u32 = 256 * 1024;
    pub const MIN_DISK_MB: u32 = 64;
    pub const MAX_DISK_MB: u32 = 1024 * 1024;

    /// A spec with every default filled in.
    pub fn new(id: SandboxId) -> Self {
        SandboxSpec {
            id,
            template: Self::DEFAULT_TEMPLATE.to_owned(),
            vcpus: Self::DEFAULT_VCPUS,
            memory_mb: Self::DEFAULT_MEMORY_MB,
            disk_mb: Self::DEFAULT_DISK_MB,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: true,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
        }
    }
}

/// A created sandbox as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxHandle {
    pub id: SandboxId,
    pub backend: Backend,
    /// Network slot (1..=65534); determines every address and name.
    pub slot: u16,
    /// Host-reachable address of the sandbox; apps listen on it.
    pub address: Ipv4Addr,
    /// Where the guest agent's gRPC server listens (`address:49983`).
    pub guest_addr: SocketAddr,
    /// `$WRENN_DIR/sandboxes/<id>/`.
    pub dir: PathBuf,
    pub spec: SandboxSpec,
    pub paused: bool,
    /// Host path of the network namespace whose loopback is the sandbox's
    /// own (`/run/netns/<prefix>-<slot>`): namespace sandboxes only. A
    /// Firecracker guest has its own kernel, so `None`.
    pub netns: Option<PathBuf>,
    /// The credential the guest agent requires (`authorization: Bearer …`).
    pub guest_token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxMetrics {
    pub cpu_usage_usec: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_limit_bytes: u64,
    pub pids: u32,
}

/// What [`Runtime::recover`] found from a previous agent run.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Still running and intact: now managed again.
    pub adopted: Vec<SandboxHandle>,
    /// Partial or dead: everything they held was removed.
    pub cleaned: Vec<SandboxId>,
}

/// Runtime configuration. Plain data; defaults in `DEFAULT_*` constants.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub backend: Backend,
    /// `$WRENN_DIR` (default `/var/lib/wrenn`).
    pub dir: PathBuf,
    /// Prefix of host-global names: netns `<prefix>-<slot>`, cgroup
    /// `<prefix>/<id>`, nftables table `<prefix>`. Tests use their own.
    pub prefix: String,
    /// Slots this runtime may use. Tests running side by side use disjoint ranges.
    pub slots: std::ops::RangeInclusive<u16>,
    /// The static `wrenn-guest` binary, bind-mounted into every sandbox.
    pub guest_bin: PathBuf,
    /// Firecracker only.
    pub firecracker_bin: PathBuf,
    pub kernel: Option<PathBuf>,
    /// Namespace sandboxes without their user namespace and seccomp filter:
    /// for benchmarks that measure what the hardening costs, never for
    /// hostile code.
    pub unhardened: bool,
}

impl RuntimeConfig {
    pub const DEFAULT_DIR: &'static str = "/var/lib/wrenn";
    pub const DEFAULT_PREFIX: &'static str = "wrenn";
    pub const DEFAULT_FIRECRACKER_BIN: &'static str = "/usr/local/bin/firecracker";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("unknown template {template:?} (no image at {path})")]
    UnknownTemplate { template: String, path: PathBuf },
    #[error("sandbox {0} already exists")]
    AlreadyExists(SandboxId),
    #[error("sandbox {0} not found")]
    NotFound(SandboxId),
    #[error("no free network slot in {first}..={last}")]
    SlotsExhausted { first: u16, last: u16 },
    #[error("sandbox {id} is {state}")]
    WrongState { id: SandboxId, state: &'static str },
    /// A named privileged step failed (e.g. "mount overlay", "create veth").
    #[error("{step} ({context})")]
    Step {
        step: &'static str,
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The configuration cannot work (bad prefix, slot range, paths).
    #[error("invalid runtime config: {0}")]
    InvalidConfig(String),
    /// The configured backend cannot run on this host; the text says why.
    #[error("the {backend:?} backend is unavailable here: {reason}")]
    Unavailable { backend: Backend, reason: String },
    /// A file or directory step failed.
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Starting the sandbox's first process failed at `step`.
    #[error("starting sandbox {id}")]
    Spawn {
        id: SandboxId,
        #[source]
        source: crate::namespace::SpawnError,
    },
    #[error(transparent)]
    Network(#[from] crate::net::Error),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::Error),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Loop(#[from] crate::loopdev::Error),
    #[error(transparent)]
    Firecracker(#[from] crate::firecracker::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A sandbox backend. Every method is safe to call concurrently for different
/// sandboxes; `destroy` is idempotent.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Validates the spec and sets up network, rootfs and cgroups. On error
    /// nothing is left behind.
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle>;

    /// Starts the guest agent as the sandbox's PID 1. Returns once the process
    /// runs; the caller waits for the guest's health (and destroys on failure).
    async fn start(&self, id: &SandboxId) -> Result<()>;

    /// Freezes every process of the sandbox.
    async fn pause(&self, id: &SandboxId) -> Result<()>;

    /// Thaws a paused sandbox; processes continue with their connections.
    async fn resume(&self, id: &SandboxId) -> Result<()>;

    /// Kills everything and removes every trace. Unknown ids are not an error.
    async fn destroy(&self, id: &SandboxId) -> Result<()>;

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics>;

    fn list(&self) -> Vec<SandboxHandle>;

    /// Whether the sandbox's first process (the guest agent, or the VMM)
    /// still runs: `Some(false)` once it exited — the sandbox is dead and
    /// only waits for its destroy —, `None` for an unknown id or a sandbox
    /// not started.
    fn alive(&self, id: &SandboxId) -> Option<bool>;

    /// What the guest agent wrote to stderr so far (its log), for error
    /// messages when it never became healthy. At most `max` bytes, newest kept.
    fn guest_output(&self, id: &SandboxId, max: usize) -> Option<String>;

    /// At start-up: adopt intact sandboxes a previous agent left running and
    /// remove everything else it left (netns, links, mounts, cgroups, dirs).
    async fn recover(&self) -> Result<Recovered>;

    /// Graceful shutdown hook for images (ShrinkImage of templates not in use).
    async fn shutdown(&self, timeout: Duration) -> Result<()>;
}

/// The factory: the backend `config.backend` names, checked against this
/// host. `Namespace` needs root, cgroups and the guest binary; `Firecracker`
/// additionally needs the binary, a usable `/dev/kvm` and a kernel — when one
/// is missing the error says which and suggests the namespace backend.
pub fn build(config: RuntimeConfig) -> Result<std::sync::Arc<dyn Runtime>> {
    crate::validate::config(&config)?;
    match config.backend {
        Backend::Namespace => Ok(std::sync::Arc::new(
            crate::namespace::NamespaceRuntime::new(config)?,
        )),
        Backend::Firecracker => Ok(std::sync::Arc::new(
            crate::firecracker::FirecrackerRuntime::new(config)?,
        )),
    }
}

/// The last `max` bytes of a log file, lossily decoded; `None` if unreadable.
pub(crate) fn read_tail(path: &std::path::Path, max: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(max as u64);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// ShrinkImage of every template of `dir` not in use, giving up (with a log
/// line) when `timeout` has passed.
pub(crate) async fn shrink_with_deadline(dir: PathBuf, timeout: Duration) {
    let work = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        for t in crate::image::list_templates(&dir) {
            if std::time::Instant::now() >= deadline {
                tracing::info!(template = %t, "shutdown deadline reached: image not shrunk");
                continue;
            }
            let path = crate::image::template_path(&dir, &t);
            if let Err(e) = crate::image::shrink_image(&path) {
                tracing::warn!(template = %t, error = %e, "shrinking image");
            }
        }
    });
    if tokio::time::timeout(timeout, work).await.is_err() {
        tracing::warn!("shrinking images did not finish before the shutdown deadline");
    }
}
