//! What the Firecracker backend keeps per runtime and per microVM; the
//! methods live with the code that uses them (`runtime.rs`, `recover.rs`).

use crate::cgroup::{Cgroup, Layout};
use crate::net::Network;
use crate::runtime::RuntimeConfig;
use crate::sandbox::proc::Proc;
use crate::sandbox::record::{Record, SandboxDir};
use crate::sandbox::table::Table;
use crate::slot::Slot;

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) cfg: RuntimeConfig,
    pub(super) kernel: std::path::PathBuf,
    pub(super) net: Network,
    pub(super) layout: Layout,
    pub(super) table: Table<VmState>,
}

/// One microVM; its `init` is the VMM process once started, for `alive`.
pub(super) type Vm = crate::sandbox::table::Cell<VmState>;

#[derive(Debug)]
pub(super) struct VmState {
    pub(super) record: Record,
    pub(super) slot: Slot,
    pub(super) dir: SandboxDir,
    pub(super) cgroup: Cgroup,
    pub(super) proc: Option<Proc>,
    pub(super) paused: bool,
}
