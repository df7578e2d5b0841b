//! The namespace backend: a sandbox is a process tree in its own mount, PID,
//! UTS, IPC and cgroup namespaces, joined to its own netns, on an overlay of
//! the template image and a private disk, limited by cgroups.
//!
//! # Design
//!
//! - [`crate::net`] builds the netns and veth pair of the sandbox's slot;
//!   [`crate::cgroup`] its cgroups; [`rootfs`] the template mount and disk;
//!   [`spawn`] the first process, which builds the root filesystem inside its
//!   own mount namespace and `exec`s `wrenn-guest` as PID 1.
//! - `create` sets up directory, network, cgroups and disk; `start` mounts
//!   and starts; both undo everything on failure. `destroy` kills the tree
//!   (PID 1's death takes the PID namespace with it), which also unmounts the
//!   disk and overlay and frees their loop device; then removes cgroups,
//!   network and directory. Every teardown step is idempotent and keyed by
//!   names derived from id and slot, so the same code cleans what a crashed
//!   agent left (`recover.rs`).
//! - Pause/resume freeze and thaw the cgroup: processes stop where they are
//!   and keep their sockets; TCP peers see a stall, not a reset.
//! - Per-sandbox operations are serialised by an async lock; different
//!   sandboxes proceed in parallel.
//!
//! - Each sandbox has a user namespace of its own ([`userns`]): its root is
//!   an unprivileged host uid, its root filesystem is idmapped
//!   ([`rootmount`]), and it runs under a seccomp filter ([`seccomp`]) and
//!   a reduced capability set, with `/proc` and `/sys` masked
//!   ([`spawn`]).
//!
//! # Limitations
//!
//! Isolation is still the host kernel's: a kernel bug reachable through the
//! allowed system calls reaches the host. That is why production hosts use
//! the Firecracker backend.

mod assign;
mod background;
#[allow(unsafe_code)]
mod caps;
mod lifecycle;
pub mod mountns;
mod recover;
pub mod rootfs;
#[allow(unsafe_code)]
pub mod rootmount;
pub mod seccomp;
#[allow(unsafe_code)]
pub mod spawn;
#[allow(unsafe_code)]
pub mod userns;

use std::sync::Arc;
use std::time::Duration;

use wrenn_types::SandboxId;

use crate::cgroup::{self, Cgroup, Layout};
use crate::net::Network;
use crate::runtime::{
    Backend, Error, Recovered, Result, Runtime, RuntimeConfig, SandboxHandle, SandboxMetrics,
    SandboxSpec,
};
use crate::sandbox::proc;
use crate::sandbox::record::{Record, SandboxDir};
use crate::sandbox::table::{self, Table};
use crate::slot::{Slot, SlotAllocator};
pub use spawn::SpawnError;

/// How long freezing, thawing and emptying a cgroup may take.
const CGROUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed sandbox's init may take to go.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespace sandboxes (see the module docs).
#[derive(Debug, Clone)]
pub struct NamespaceRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: RuntimeConfig,
    net: Network,
    layout: Layout,
    templates: rootfs::Templates,
    disks: rootfs::Disks,
    table: Table<State>,
    background: background::Background,
    /// The seccomp filter; `None` only when the runtime runs unhardened
    /// (no user namespace either: benchmarks).
    seccomp: Option<&'static [seccompiler::sock_filter]>,
}

/// One sandbox: a snapshot for `list`, its first process (for `alive`)
/// and the state behind an async lock.
type Cell = table::Cell<State>;

#[derive(Debug)]
struct State {
    record: Record,
    slot: Slot,
    dir: SandboxDir,
    cgroup: Cgroup,
    proc: Option<proc::Proc>,
    /// The key of the template mount this sandbox holds a reference on
    /// (started by this runtime).
    template_mount: Option<String>,
    paused: bool,
    /// The sandbox's user namespace, made at create (beside the network)
    /// and used by its start.
    userns: Option<std::os::fd::OwnedFd>,
}

impl NamespaceRuntime {
    /// Checks the host (root, cgroups, guest binary) and installs the
    /// instance's firewall table. Call [`Runtime::recover`] next.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        crate::validate::config(&cfg)?;
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Unavailable {
                backend: Backend::Namespace,
                reason: "namespace sandboxes need root (namespaces, mounts, cgroups, netlink)"
                    .into(),
            });
        }
        crate::validate::guest_bin(&cfg)?;
        let layout = Layout::detect()?;
        let net = Network::new(&cfg.prefix, cfg.slots.clone());
        net.firewall().ensure()?;
        let instance = format!("{}-{}-{}", cfg.prefix, cfg.slots.start(), cfg.slots.end());
        let seccomp = if cfg.unhardened {
            tracing::warn!(
                "namespace sandboxes run WITHOUT user namespaces and seccomp (benchmarks only)"
            );
            None
        } else {
            Some(seccomp::program().map_err(|reason| Error::Unavailable {
                backend: Backend::Namespace,
                reason: format!("compiling the seccomp filter: {reason}"),
            })?)
        };
        let mut slots = SlotAllocator::new(cfg.slots.clone());
        let reserved = userns::reserved_slots(std::path::Path::new("/etc"));
        if !reserved.is_empty() {
            tracing::info!(
                ?reserved,
                "slots whose host id range a host user or group uses are never allocated"
            );
        }
        slots.reserve(reserved);
        Ok(NamespaceRuntime {
            inner: Arc::new(Inner {
                templates: rootfs::Templates::new(&cfg.dir, &instance)?,
                disks: rootfs::Disks::new(&cfg.dir),
                background: background::Background::default(),
                table: Table::new(slots),
                seccomp,
                net,
                layout,
                cfg,
            }),
        })
    }

    /// The nftables table this instance installed.
    pub fn firewall_table(&self) -> &str {
        self.inner.net.firewall().table()
    }

    fn cell(&self, id: &SandboxId) -> Result<Arc<Cell>> {
        self.inner.table.get(id)
    }
}

impl Inner {
    fn cgroup(&self, id: &SandboxId) -> Cgroup {
        Cgroup::new(self.layout.clone(), &self.cfg.prefix, id.as_str())
    }

    fn handle(&self, st: &State) -> SandboxHandle {
        let netns = crate::net::netns::path(&st.slot.netns_name(&self.cfg.prefix));
        table::handle(
            Backend::Namespace,
            &st.record,
            st.slot,
            &st.dir,
            st.paused,
            Some(netns),
        )
    }
}

#[async_trait::async_trait]
impl Runtime for NamespaceRuntime {
    fn backend(&self) -> Backend {
        Backend::Namespace
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        lifecycle::create(&self.inner, spec).await
    }

    async fn start(&self, id: &SandboxId) -> Result<()> {
        let cell = self.cell(id)?;
        lifecycle::start(&self.inner, &cell).await
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let cell = self.cell(id)?;
        lifecycle::set_paused(&self.inner, &cell, true).await
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        let cell = self.cell(id)?;
        lifecycle::set_paused(&self.inner, &cell, false).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        lifecycle::destroy(&self.inner, id).await
    }

    fn can_assign(&self) -> bool {
        true
    }

    async fn assign(&self, from: &SandboxId, spec: SandboxSpec) -> Result<SandboxHandle> {
        assign::assign(&self.inner, from, spec).await
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        let cell = self.cell(id)?;
        lifecycle::metrics(&cell).await
    }

    fn list(&self) -> Vec<SandboxHandle> {
        self.inner.table.handles()
    }

    fn alive(&self, id: &SandboxId) -> Option<bool> {
        self.inner.table.alive(id)
    }

    fn guest_output(&self, id: &SandboxId, max: usize) -> Option<String> {
        let dir = SandboxDir::new(&self.inner.cfg.dir, id);
        crate::guestlog::tail(&dir.log(), max)
    }

    fn disk_image(&self, id: &SandboxId) -> Option<std::path::PathBuf> {
        self.inner.table.get(id).ok()?;
        Some(SandboxDir::new(&self.inner.cfg.dir, id).disk_image())
    }

    async fn recover(&self) -> Result<Recovered> {
        recover::recover(&self.inner).await
    }

    async fn shutdown(&self, timeout: Duration) -> Result<()> {
        let inner = self.inner.clone();
        if !inner.background.wait(timeout).await {
            tracing::warn!(
                pending = inner.background.pending(),
                "shutdown: sandbox directories still being deleted"
            );
        }
        if inner.table.is_empty() {
            inner.templates.clear();
            inner.net.firewall().remove()?;
            cgroup::remove_prefix(&inner.layout, &inner.cfg.prefix);
        }
        let dir = inner.cfg.dir.clone();
        crate::image::shrink_with_deadline(dir, timeout).await;
        Ok(())
    }
}
