//! What the Firecracker backend keeps per runtime and per microVM; the
//! methods live with the code that uses them (`runtime.rs`, `recover.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use wrenn_types::SandboxId;

use crate::cgroup::{Cgroup, Layout};
use crate::net::Network;
use crate::runtime::{RuntimeConfig, SandboxHandle};
use crate::sandbox::proc::Proc;
use crate::sandbox::record::{Record, SandboxDir};
use crate::slot::{Slot, SlotAllocator};

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) cfg: RuntimeConfig,
    pub(super) kernel: std::path::PathBuf,
    pub(super) net: Network,
    pub(super) layout: Layout,
    pub(super) table: Mutex<(SlotAllocator, HashMap<SandboxId, Arc<Vm>>)>,
}

#[derive(Debug)]
pub(super) struct Vm {
    pub(super) handle: Mutex<Option<SandboxHandle>>,
    /// The VMM process once started, for `alive`.
    pub(super) init: Mutex<Option<Proc>>,
    pub(super) state: tokio::sync::Mutex<VmState>,
}

#[derive(Debug)]
pub(super) struct VmState {
    pub(super) record: Record,
    pub(super) slot: Slot,
    pub(super) dir: SandboxDir,
    pub(super) cgroup: Cgroup,
    pub(super) proc: Option<Proc>,
    pub(super) paused: bool,
}
