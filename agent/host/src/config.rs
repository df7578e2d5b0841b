//! The host agent's configuration: a plain serde struct with `DEFAULT_*`
//! constants. The CLI fills it from flags, a config file and the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrenn_vmm::{Backend, RuntimeConfig};

/// Everything `wrenn agent` can be told. Unknown fields are an error so a typo
/// in a config file is reported instead of silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of the `HostAgent` gRPC server.
    pub listen: SocketAddr,
    /// `$WRENN_DIR`: images, sandbox directories, logs.
    pub dir: PathBuf,
    /// Reported in every `Sandbox.host_id`; empty means the machine's hostname.
    pub host_id: String,
    /// Timeout of a sandbox whose spec leaves it 0.
    pub default_timeout_secs: u32,
    /// Longest timeout CreateSandbox and SetTimeout accept.
    pub max_timeout_secs: u32,
    /// On shutdown, leave sandboxes running (the next start adopts them)
    /// instead of destroying them.
    pub keep_sandboxes_on_shutdown: bool,
    /// How long a new sandbox's guest agent may take to become healthy.
    pub guest_ready_timeout_ms: u64,
    /// Interval between two health probes while waiting for the guest.
    pub guest_poll_interval_ms: u64,
    /// Memory kept free for the host whatever the sandboxes do (admission
    /// policy: `manager::admission`).
    pub reserve_memory_mb: u64,
    /// Disk kept free under `dir`, the same way.
    pub reserve_disk_mb: u64,
    /// Admission sets aside 1/this of every sandbox's memory limit on top of
    /// what is in use (1: full limits; limits are ceilings, idle sandboxes
    /// use a few MiB).
    pub memory_overcommit: u32,
    /// The same for disk images (sparse: they use what is written).
    pub disk_overcommit: u32,
    /// Sandboxes of the default shape kept running, ready to be handed to
    /// creates (the warm pool; 0: none). They count against admission like
    /// sandboxes and give way to creates that need their room.
    pub pool_size: u32,
    /// The template of pooled sandboxes (their size and network are the
    /// defaults).
    pub pool_template: String,
    /// Build the `base` template at start-up when it does not exist.
    pub build_base_image: bool,
    /// Budget for the shutdown steps after the server stopped accepting
    /// (destroying sandboxes, shrinking images).
    pub shutdown_timeout_secs: u64,
    /// The key every caller must present (`authorization: Bearer <key>`);
    /// created `0600` at first start. Empty means `<dir>/agent.key`.
    pub key_file: PathBuf,
    /// Time a caller has from connecting to its first call, and on HTTP/1.1
    /// from a call's first byte to its complete header.
    pub header_read_timeout_ms: u64,
    /// Connections with no call in progress for this long are closed.
    pub idle_timeout_secs: u64,
    pub runtime: RuntimeSettings,
}

impl AgentConfig {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:7801";
    pub const DEFAULT_DIR: &'static str = RuntimeConfig::DEFAULT_DIR;
    pub const DEFAULT_TIMEOUT_SECS: u32 = wrenn_types::spec::DEFAULT_TIMEOUT_SECS;
    pub const DEFAULT_MAX_TIMEOUT_SECS: u32 = 24 * 3600;
    pub const DEFAULT_GUEST_READY_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_GUEST_POLL_INTERVAL_MS: u64 = 10;
    pub const DEFAULT_RESERVE_MEMORY_MB: u64 = 256;
    pub const DEFAULT_RESERVE_DISK_MB: u64 = 1024;
    pub const DEFAULT_MEMORY_OVERCOMMIT: u32 = 8;
    pub const DEFAULT_DISK_OVERCOMMIT: u32 = 16;
    pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 60;
    pub const DEFAULT_POOL_SIZE: u32 = 0;
    pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 620;
    /// The key's file name in `dir`.
    pub const KEY_FILE: &'static str = "agent.key";

    /// Where the agent key is.
    pub fn key_path(&self) -> PathBuf {
        if self.key_file.as_os_str().is_empty() {
            self.dir.join(Self::KEY_FILE)
        } else {
            self.key_file.clone()
        }
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn guest_ready_timeout(&self) -> Duration {
        Duration::from_millis(self.guest_ready_timeout_ms)
    }

    pub fn guest_poll_interval(&self) -> Duration {
        Duration::from_millis(self.guest_poll_interval_ms.max(1))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The [`RuntimeConfig`] this configuration describes. `guest_bin` must
    /// already be resolved (see [`crate::guest_bin::resolve`]).
    pub fn runtime_config(&self, guest_bin: PathBuf) -> RuntimeConfig {
        let r = &self.runtime;
        RuntimeConfig {
            backend: r.backend,
            dir: self.dir.clone(),
            prefix: r.prefix.clone(),
            slots: r.slot_first..=r.slot_last,
            guest_bin,
            firecracker_bin: r.firecracker_bin.clone(),
            kernel: r.kernel.clone(),
            unhardened: r.unhardened_for_benchmarks,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: Self::DEFAULT_LISTEN.parse().expect("valid default address"),
            dir: PathBuf::from(Self::DEFAULT_DIR),
            host_id: String::new(),
            default_timeout_secs: Self::DEFAULT_TIMEOUT_SECS,
            max_timeout_secs: Self::DEFAULT_MAX_TIMEOUT_SECS,
            keep_sandboxes_on_shutdown: false,
            guest_ready_timeout_ms: Self::DEFAULT_GUEST_READY_TIMEOUT_MS,
            guest_poll_interval_ms: Self::DEFAULT_GUEST_POLL_INTERVAL_MS,
            reserve_memory_mb: Self::DEFAULT_RESERVE_MEMORY_MB,
            reserve_disk_mb: Self::DEFAULT_RESERVE_DISK_MB,
            memory_overcommit: Self::DEFAULT_MEMORY_OVERCOMMIT,
            disk_overcommit: Self::DEFAULT_DISK_OVERCOMMIT,
            pool_size: Self::DEFAULT_POOL_SIZE,
            pool_template: wrenn_types::spec::DEFAULT_TEMPLATE.to_owned(),
            build_base_image: true,
            shutdown_timeout_secs: Self::DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            key_file: PathBuf::new(),
            header_read_timeout_ms: Self::DEFAULT_HEADER_READ_TIMEOUT_MS,
            idle_timeout_secs: Self::DEFAULT_IDLE_TIMEOUT_SECS,
            runtime: RuntimeSettings::default(),
        }
    }
}

/// The runtime part of the configuration (see [`RuntimeConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    pub backend: Backend,
    /// Prefix of host-global names (netns, cgroups, nftables table).
    pub prefix: String,
    /// First and last network slot this agent may use.
    pub slot_first: u16,
    pub slot_last: u16,
    /// The static `wrenn-guest` binary; unset means the usual search
    /// (`WRENN_GUEST_BIN`, next to the executable, the workspace's target dir).
    pub guest_bin: Option<PathBuf>,
    /// Firecracker backend only.
    pub firecracker_bin: PathBuf,
    pub kernel: Option<PathBuf>,
    /// Namespace sandboxes without user namespace and seccomp: only for
    /// benchmarks that measure what the hardening costs. Never for hostile code.
    pub unhardened_for_benchmarks: bool,
}

impl RuntimeSettings {
    pub const DEFAULT_SLOT_FIRST: u16 = 1;
    pub const DEFAULT_SLOT_LAST: u16 = 65534;
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            backend: Backend::Namespace,
            prefix: RuntimeConfig::DEFAULT_PREFIX.to_owned(),
            slot_first: Self::DEFAULT_SLOT_FIRST,
            slot_last: Self::DEFAULT_SLOT_LAST,
            guest_bin: None,
            firecracker_bin: PathBuf::from(RuntimeConfig::DEFAULT_FIRECRACKER_BIN),
            kernel: None,
            unhardened_for_benchmarks: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = AgentConfig::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7801");
        assert_eq!(c.dir, PathBuf::from("/var/lib/wrenn"));
        assert_eq!(c.default_timeout_secs, 300);
        assert_eq!(c.guest_ready_timeout(), Duration::from_secs(30));
        assert_eq!(c.guest_poll_interval(), Duration::from_millis(10));
        assert_eq!(c.runtime.prefix, "wrenn");
        assert_eq!((c.runtime.slot_first, c.runtime.slot_last), (1, 65534));
        assert_eq!(c.key_path(), PathBuf::from("/var/lib/wrenn/agent.key"));
        assert_eq!(c.header_read_timeout(), Duration::from_secs(10));
        assert_eq!(c.idle_timeout(), Duration::from_secs(620));
        assert!(!c.runtime.unhardened_for_benchmarks);
    }

    #[test]
    fn partial_input_fills_defaults() {
        let c: AgentConfig = serde_json::from_str(
            r#"{"listen":"127.0.0.1:9000","runtime":{"prefix":"wrenn-x","slot_first":10}}"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.runtime.prefix, "wrenn-x");
        assert_eq!(c.runtime.slot_first, 10);
        assert_eq!(c.runtime.slot_last, RuntimeSettings::DEFAULT_SLOT_LAST);
        assert_eq!(c.default_timeout_secs, AgentConfig::DEFAULT_TIMEOUT_SECS);
    }

    #[test]
    fn unknown_fields_are_refused_and_named() {
        let err = serde_json::from_str::<AgentConfig>(r#"{"listne":"127.0.0.1:1"}"#).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = serde_json::from_str::<AgentConfig>(r#"{"runtime":{"prefx":"a"}}"#).unwrap_err();
        assert!(err.to_string().contains("prefx"), "{err}");
    }

    #[test]
    fn runtime_config_carries_every_setting() {
        let mut c = AgentConfig {
            dir: PathBuf::from("/tmp/w"),
            ..Default::default()
        };
        c.runtime.prefix = "wrenn-ta".into();
        c.runtime.slot_first = 2000;
        c.runtime.slot_last = 2999;
        let r = c.runtime_config(PathBuf::from("/g"));
        assert_eq!(r.dir, PathBuf::from("/tmp/w"));
        assert_eq!(r.prefix, "wrenn-ta");
        assert_eq!(r.slots, 2000..=2999);
        assert_eq!(r.guest_bin, PathBuf::from("/g"));
        assert_eq!(r.backend, Backend::Namespace);
    }
}
