//! What [`run`](crate::run) and [`start`](crate::start) are given: plain
//! values with `DEFAULT_*` constants, filled from the environment by
//! [`Options::from_env`].

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::extension::Extension;
use crate::store::StoreConfig;

/// `$WRENN_DIR` when unset.
pub const DEFAULT_WRENN_DIR: &str = "/var/lib/wrenn";
/// Control plane gRPC and HTTP.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7800";
/// The local host agent.
pub const DEFAULT_AGENT_ADDRESS: &str = "http://127.0.0.1:7801";
/// Id of the host in a one-machine setup.
pub const DEFAULT_HOST_ID: &str = "local";
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// Stopped records older than this are deleted by the reconciler.
pub const DEFAULT_STOPPED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest wait for a lifecycle call (create, destroy, pause, resume, timeout)
/// on a host agent. Interactive calls (exec, PTY, files) have no such limit.
pub const DEFAULT_LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(120);
pub use wrenn_proto::serve::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HTTP2_KEEPALIVE_INTERVAL, DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, ServerLimits,
};

/// A future that resolves when the control plane should stop.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One host agent the control plane schedules onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Stable id, recorded with every sandbox placed on the host.
    pub id: String,
    /// `http://HOST:PORT` of its `HostAgent` gRPC service.
    pub agent_address: String,
    /// Address of its proxy (data plane), if any; reported by `Hosts.List`.
    pub proxy_address: String,
    /// The key its agent requires (`<dir>/agent.key` on that host); empty
    /// presents none.
    pub agent_key: wrenn_proto::auth::Secret,
}

impl HostConfig {
    pub fn new(id: impl Into<String>, agent_address: impl Into<String>) -> Self {
        HostConfig {
            id: id.into(),
            agent_address: agent_address.into(),
            proxy_address: String::new(),
            agent_key: Default::default(),
        }
    }
}

/// What the reconciler does with a sandbox that is live on a host but has no
/// record in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrphanPolicy {
    /// Insert a record for it (state, address and metadata as the host reports
    /// them) and log a warning. Nothing is destroyed on a guess, and the host's
    /// own timeout still bounds its life. The default.
    #[default]
    Adopt,
    /// Destroy it on the host.
    Destroy,
}

/// Everything the control plane is started with.
pub struct Options {
    /// `$WRENN_DIR`: where `admin.key` (and the default SQLite store) go.
    pub wrenn_dir: PathBuf,
    pub store: StoreConfig,
    /// gRPC and HTTP listen address; port 0 picks a free one
    /// ([`Control::local_addr`](crate::Control::local_addr) tells which).
    pub listen: SocketAddr,
    /// Host agents, at least one.
    pub hosts: Vec<HostConfig>,
    pub reconcile_interval: Duration,
    pub orphan_policy: OrphanPolicy,
    pub stopped_retention: Duration,
    pub lifecycle_timeout: Duration,
    pub limits: ServerLimits,
    /// Added services, routes and tasks; installed in order.
    pub extensions: Vec<Box<dyn Extension>>,
    /// Resolves when the control plane should stop. `None`: only
    /// [`Control::shutdown`](crate::Control::shutdown) stops it.
    pub shutdown: Option<ShutdownSignal>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("wrenn_dir", &self.wrenn_dir)
            .field("store", &self.store.describe())
            .field("listen", &self.listen)
            .field("hosts", &self.hosts)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("orphan_policy", &self.orphan_policy)
            .field("stopped_retention", &self.stopped_retention)
            .field("lifecycle_timeout", &self.lifecycle_timeout)
            .field("limits", &self.limits)
            .field(
                "extensions",
                &self.extensions.iter().map(|e| e.name()).collect::<Vec<_>>(),
            )
            .field("shutdown", &self.shutdown.is_some())
            .finish()
    }
}

impl Options {
    /// Defaults with `wrenn_dir` as `$WRENN_DIR` and SQLite in it.
    pub fn new(wrenn_dir: impl Into<PathBuf>) -> Self {
        let wrenn_dir = wrenn_dir.into();
        Options {
            store: StoreConfig::Sqlite(wrenn_dir.join(crate::store::SQLITE_FILE)),
            wrenn_dir,
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a socket address"),
            hosts: vec![HostConfig::new(DEFAULT_HOST_ID, DEFAULT_AGENT_ADDRESS)],
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            orphan_policy: OrphanPolicy::default(),
            stopped_retention: DEFAULT_STOPPED_RETENTION,
            lifecycle_timeout: DEFAULT_LIFECYCLE_TIMEOUT,
            limits: ServerLimits::default(),
            extensions: Vec::new(),
            shutdown: None,
        }
    }

    /// Defaults, with `$WRENN_DIR` and `$DATABASE_URL` read from the
    /// environment.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("WRENN_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WRENN_DIR));
        let mut opts = Options::new(&dir);
        opts.store = StoreConfig::from_env(&dir);
        opts
    }

    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    pub fn with_store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// Replaces the host list with one host agent at `address`.
    pub fn with_agent(mut self, address: impl Into<String>) -> Self {
        self.hosts = vec![HostConfig::new(DEFAULT_HOST_ID, address)];
        self
    }

    /// Presents `key` to every host agent (one machine: its `agent.key`).
    pub fn with_agent_key(mut self, key: impl Into<String>) -> Self {
        let key = wrenn_proto::auth::Secret::new(key);
        for h in &mut self.hosts {
            h.agent_key = key.clone();
        }
        self
    }

    pub fn with_extension(mut self, extension: impl Extension) -> Self {
        self.extensions.push(Box::new(extension));
        self
    }

    pub fn with_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }
}
