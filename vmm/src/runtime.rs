//! The `Runtime` trait: one interface, one implementation per backend.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use wrenn_types::SandboxId;
use wrenn_types::spec;

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
    /// The token envd-compatible clients present as `X-Access-Token` to the
    /// guest's HTTP interface; the guest gets it as
    /// [`ENVD_ACCESS_TOKEN_ENV`]. Empty: none yet (a warm-pool sandbox,
    /// which learns its token at assign); the guest then refuses those calls.
    pub envd_access_token: String,
}

/// The guest agent's environment variable that carries
/// [`SandboxSpec::envd_access_token`] (the guest drops every `WRENN_GUEST_*`
/// from the environment of the processes it starts).
pub const ENVD_ACCESS_TOKEN_ENV: &str = "WRENN_GUEST_ENVD_ACCESS_TOKEN";

impl SandboxSpec {
    pub const DEFAULT_TEMPLATE: &'static str = spec::DEFAULT_TEMPLATE;
    pub const DEFAULT_VCPUS: u32 = spec::DEFAULT_VCPUS;
    pub const DEFAULT_MEMORY_MB: u32 = spec::DEFAULT_MEMORY_MB;
    pub const DEFAULT_DISK_MB: u32 = spec::DEFAULT_DISK_MB;
    pub const MAX_VCPUS: u32 = spec::MAX_VCPUS;
    pub const MIN_MEMORY_MB: u32 = spec::MIN_MEMORY_MB;
    pub const MAX_MEMORY_MB: u32 = spec::MAX_MEMORY_MB;
    pub const MIN_DISK_MB: u32 = spec::MIN_DISK_MB;
    pub const MAX_DISK_MB: u32 = spec::MAX_DISK_MB;

    /// The first field `other` differs in from `self` among those a running
    /// sandbox cannot change (see [`Runtime::assign`]): template, size and
    /// network. Id, environment, metadata and envd access token may differ.
    pub fn fixed_difference(&self, other: &SandboxSpec) -> Option<&'static str> {
        [
            ("template", self.template == other.template),
            ("vcpus", self.vcpus == other.vcpus),
            ("memory", self.memory_mb == other.memory_mb),
            ("disk", self.disk_mb == other.disk_mb),
            ("internet setting", self.internet == other.internet),
            ("allow_out", self.allow_out == other.allow_out),
            ("deny_out", self.deny_out == other.deny_out),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(field, _)| field)
    }

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
            envd_access_token: String::new(),
        }
    }

    /// The guest agent's environment: [`SandboxSpec::env`] with the envd
    /// access token set (or, when there is none, a variable of that name
    /// given in `env` removed: nobody else chooses the guest's token).
    pub fn guest_env(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        if self.envd_access_token.is_empty() {
            env.remove(ENVD_ACCESS_TOKEN_ENV);
        } else {
            env.insert(
                ENVD_ACCESS_TOKEN_ENV.to_owned(),
                self.envd_access_token.clone(),
            );
        }
        env
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
        source: SpawnError,
    },
    #[error(transparent)]
    Network(#[from] crate::net::Error),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::Error),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Loop(#[from] crate::loopdev::Error),
    /// A backend's own failure (for Firecracker: its API or its process).
    #[error("{backend:?} backend")]
    Backend {
        backend: Backend,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed start of a sandbox's first process: the step and what it was
/// working on (a path, a name), whatever the backend.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct SpawnError {
    pub step: &'static str,
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

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

    /// Whether [`Runtime::assign`] works here (a warm pool is useless
    /// without it).
    fn can_assign(&self) -> bool {
        false
    }

    /// Hands the running sandbox `from`, made ahead of time (the host agent's
    /// warm pool), to `spec.id`: renamed, with `spec`'s environment and
    /// metadata in its record. Everything else in `spec` must be what `from`
    /// was made with. The caller tells the guest (`wrenn.v1.Guest/Assign`).
    /// On error `from` is left as it was. Backends that cannot rename a
    /// running sandbox answer `Unavailable`.
    async fn assign(&self, from: &SandboxId, spec: SandboxSpec) -> Result<SandboxHandle> {
        let _ = (from, spec);
        debug_assert!(!self.can_assign());
        Err(Error::Unavailable {
            backend: self.backend(),
            reason: "this backend cannot hand out sandboxes made ahead of time".into(),
        })
    }

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

    /// The file of the sandbox's writable disk (an ext4 image whose
    /// `upper/` is the overlay's upper layer), for a template build that
    /// keeps it (a hard link) past the sandbox's destroy; `None` for an
    /// unknown id or a backend without one.
    fn disk_image(&self, id: &SandboxId) -> Option<std::path::PathBuf> {
        let _ = id;
        None
    }

    /// At start-up: adopt intact sandboxes a previous agent left running and
    /// remove everything else it left (netns, links, mounts, cgroups, dirs).
    async fn recover(&self) -> Result<Recovered>;

    /// Graceful shutdown hook for images (ShrinkImage of templates not in use).
    async fn shutdown(&self, timeout: Duration) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_running_sandbox_can_take_may_differ() {
        let have = SandboxSpec::new("pool".parse().unwrap());
        let mut want = SandboxSpec::new("mine".parse().unwrap());
        want.env.insert("A".into(), "1".into());
        want.metadata.insert("team".into(), "x".into());
        want.envd_access_token = "a".repeat(64);
        assert_eq!(have.fixed_difference(&want), None);
        want.memory_mb += 1;
        assert_eq!(have.fixed_difference(&want), Some("memory"));
        let mut want = SandboxSpec::new("mine".parse().unwrap());
        want.internet = !have.internet;
        assert_eq!(have.fixed_difference(&want), Some("internet setting"));
        let mut want = SandboxSpec::new("mine".parse().unwrap());
        want.template = "other".into();
        assert_eq!(have.fixed_difference(&want), Some("template"));
    }

    #[test]
    fn the_guest_gets_the_envd_token_and_only_that_one() {
        let mut spec = SandboxSpec::new("sb".parse().unwrap());
        spec.env.insert("A".into(), "1".into());
        spec.env
            .insert(ENVD_ACCESS_TOKEN_ENV.into(), "user-chosen-token".into());
        let env = spec.guest_env();
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get(ENVD_ACCESS_TOKEN_ENV), None, "no token yet");
        spec.envd_access_token = "t".repeat(32);
        let env = spec.guest_env();
        assert_eq!(env.get(ENVD_ACCESS_TOKEN_ENV), Some(&"t".repeat(32)));
        assert_eq!(env.len(), 2);
    }
}
