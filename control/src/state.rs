//! What every service and the reconciler share.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use wrenn_types::SandboxId;

use crate::hosts::HostTable;
use crate::store::Store;

/// Shared by the gRPC services, the reconciler and extensions.
#[derive(Debug)]
pub struct ControlState {
    pub store: Store,
    pub hosts: Arc<HostTable>,
    /// Sandboxes with a lifecycle call in flight; the reconciler leaves them
    /// alone so it never judges a record halfway through a change.
    pub(crate) busy: Busy,
    pub(crate) lifecycle_timeout: Duration,
}

impl ControlState {
    pub(crate) fn new(store: Store, hosts: Arc<HostTable>, lifecycle_timeout: Duration) -> Self {
        ControlState {
            store,
            hosts,
            busy: Busy::default(),
            lifecycle_timeout,
        }
    }
}

/// A counted set of sandbox ids.
#[derive(Debug, Default)]
pub(crate) struct Busy(Arc<DashMap<SandboxId, usize>>);

impl Busy {
    /// Marks `id` busy until the guard drops.
    pub(crate) fn hold(&self, id: &SandboxId) -> BusyGuard {
        *self.0.entry(id.clone()).or_insert(0) += 1;
        BusyGuard {
            map: self.0.clone(),
            id: id.clone(),
        }
    }

    pub(crate) fn contains(&self, id: &SandboxId) -> bool {
        self.0.contains_key(id)
    }
}

#[derive(Debug)]
pub(crate) struct BusyGuard {
    map: Arc<DashMap<SandboxId, usize>>,
    id: SandboxId,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.map.remove_if_mut(&self.id, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_counts_overlapping_holds() {
        let busy = Busy::default();
        let id = SandboxId::generate();
        let a = busy.hold(&id);
        let b = busy.hold(&id);
        drop(a);
        assert!(busy.contains(&id));
        drop(b);
        assert!(!busy.contains(&id));
    }
}
