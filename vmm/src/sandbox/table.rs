//! The sandboxes one runtime manages and the slots they hold — the same for
//! every backend; a backend brings only its per-sandbox state `S`.
//!
//! # Design
//!
//! One lock over both the id → cell map and the [`SlotAllocator`]: an id and
//! its slot are taken and given back together, so two creates of one id, or
//! two sandboxes on one slot, cannot happen. The lock is a short,
//! synchronous one (never held across an `.await`); what a sandbox does
//! while being made, started or destroyed happens under its cell's async
//! lock, so different sandboxes proceed in parallel.
//!
//! A cell's `handle` is what `list` shows: `None` while the sandbox is
//! being made (reserved but not created) or destroyed, so neither is
//! listed half-way. `init` is its first process (the sandbox's init, or the
//! VMM), read by `alive` without waiting for the async lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use wrenn_types::SandboxId;

use super::proc::Proc;
use super::record::{Record, SandboxDir};
use crate::runtime::{Backend, Error, Result, SandboxHandle};
use crate::slot::{Slot, SlotAllocator};

/// One sandbox of a runtime (see the module docs).
#[derive(Debug)]
pub struct Cell<S> {
    pub handle: Mutex<Option<SandboxHandle>>,
    pub init: Mutex<Option<Proc>>,
    pub state: tokio::sync::Mutex<S>,
}

impl<S> Cell<S> {
    pub fn new(state: S, handle: Option<SandboxHandle>, init: Option<Proc>) -> Arc<Self> {
        Arc::new(Cell {
            handle: Mutex::new(handle),
            init: Mutex::new(init),
            state: tokio::sync::Mutex::new(state),
        })
    }
}

/// The sandboxes and slots of one runtime (see the module docs).
#[derive(Debug)]
pub struct Table<S> {
    inner: Mutex<Inner<S>>,
}

#[derive(Debug)]
struct Inner<S> {
    slots: SlotAllocator,
    cells: HashMap<SandboxId, Arc<Cell<S>>>,
}

impl<S> Table<S> {
    pub fn new(slots: SlotAllocator) -> Self {
        Table {
            inner: Mutex::new(Inner {
                slots,
                cells: HashMap::new(),
            }),
        }
    }

    /// The cell of `id`, or [`Error::NotFound`].
    pub fn get(&self, id: &SandboxId) -> Result<Arc<Cell<S>>> {
        self.inner
            .lock()
            .cells
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    pub fn contains(&self, id: &SandboxId) -> bool {
        self.inner.lock().cells.contains_key(id)
    }

    /// Claims `id` and a free slot for a new sandbox, with the state `make`
    /// builds for that slot; the cell is not listed until it gets a handle.
    /// [`Error::AlreadyExists`] or [`Error::SlotsExhausted`] otherwise.
    pub fn reserve(
        &self,
        id: &SandboxId,
        make: impl FnOnce(Slot) -> S,
    ) -> Result<(Arc<Cell<S>>, Slot)> {
        let mut t = self.inner.lock();
        if t.cells.contains_key(id) {
            return Err(Error::AlreadyExists(id.clone()));
        }
        let slot = t.slots.allocate().ok_or_else(|| Error::SlotsExhausted {
            first: *t.slots.range().start(),
            last: *t.slots.range().end(),
        })?;
        let cell = Cell::new(make(slot), None, None);
        t.cells.insert(id.clone(), cell.clone());
        Ok((cell, slot))
    }

    /// Gives back what [`Table::reserve`] took (a create that failed).
    pub fn unreserve(&self, id: &SandboxId, slot: Slot) {
        let mut t = self.inner.lock();
        t.cells.remove(id);
        t.slots.release(slot);
    }

    /// Adds a recovered sandbox whose slot was [`Table::claim`]ed.
    pub fn insert(&self, id: SandboxId, cell: Arc<Cell<S>>) {
        self.inner.lock().cells.insert(id, cell);
    }

    /// Takes `id` out of the table; its slot stays taken until
    /// [`Table::release`] (after the teardown that frees its names).
    pub fn remove(&self, id: &SandboxId) -> Option<Arc<Cell<S>>> {
        self.inner.lock().cells.remove(id)
    }

    /// Moves `from`'s cell to the id `to`; [`Error::AlreadyExists`] if `to`
    /// is taken, [`Error::NotFound`] if `from` is gone.
    pub fn rename(&self, from: &SandboxId, to: &SandboxId) -> Result<()> {
        let mut t = self.inner.lock();
        if t.cells.contains_key(to) {
            return Err(Error::AlreadyExists(to.clone()));
        }
        let cell = t
            .cells
            .remove(from)
            .ok_or_else(|| Error::NotFound(from.clone()))?;
        t.cells.insert(to.clone(), cell);
        Ok(())
    }

    /// Marks a specific slot as used (recovery); false if out of range,
    /// reserved or taken.
    pub fn claim(&self, slot: Slot) -> bool {
        self.inner.lock().slots.claim(slot)
    }

    pub fn release(&self, slot: Slot) {
        self.inner.lock().slots.release(slot);
    }

    pub fn is_used(&self, slot: Slot) -> bool {
        self.inner.lock().slots.is_used(slot)
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().cells.is_empty()
    }

    /// The handles of the listed sandboxes, by id.
    pub fn handles(&self) -> Vec<SandboxHandle> {
        let cells: Vec<Arc<Cell<S>>> = self.inner.lock().cells.values().cloned().collect();
        let mut out: Vec<SandboxHandle> = cells
            .iter()
            .filter_map(|c| c.handle.lock().clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Whether `id`'s first process still runs; `None` for an unknown id or
    /// one not started.
    pub fn alive(&self, id: &SandboxId) -> Option<bool> {
        let cell = self.get(id).ok()?;
        let init = cell.init.lock();
        init.as_ref().map(|p| !p.has_exited())
    }
}

/// What a backend's sandbox is, as callers see it.
pub fn handle(
    backend: Backend,
    record: &Record,
    slot: Slot,
    dir: &SandboxDir,
    paused: bool,
    netns: Option<PathBuf>,
) -> SandboxHandle {
    let address = slot.sandbox_addr();
    SandboxHandle {
        id: record.id.clone(),
        backend,
        slot: slot.get(),
        address,
        guest_addr: std::net::SocketAddr::new(address.into(), wrenn_types::GUEST_PORT),
        dir: dir.dir.clone(),
        spec: record.spec(),
        paused,
        netns,
        guest_token: record.guest_token.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SandboxId {
        s.parse().unwrap()
    }

    #[test]
    fn ids_and_slots_are_taken_and_given_back_together() {
        let t: Table<u16> = Table::new(SlotAllocator::new(10..=11));
        let (_, a) = t.reserve(&id("a"), |s| s.get()).unwrap();
        assert!(matches!(
            t.reserve(&id("a"), |s| s.get()),
            Err(Error::AlreadyExists(_))
        ));
        let (cell_b, b) = t.reserve(&id("b"), |s| s.get()).unwrap();
        assert_ne!(a, b);
        assert_eq!(*cell_b.state.try_lock().unwrap(), b.get());
        assert!(matches!(
            t.reserve(&id("c"), |s| s.get()),
            Err(Error::SlotsExhausted {
                first: 10,
                last: 11
            })
        ));
        t.unreserve(&id("a"), a);
        assert!(!t.contains(&id("a")) && !t.is_used(a));
        assert!(t.reserve(&id("c"), |s| s.get()).is_ok());
        // Reserved cells have no handle yet: not listed, not started.
        assert!(t.handles().is_empty());
        assert_eq!(t.alive(&id("b")), None);
        assert!(matches!(t.get(&id("zz")), Err(Error::NotFound(_))));
    }

    #[test]
    fn rename_refuses_a_taken_name_and_keeps_both() {
        let t: Table<()> = Table::new(SlotAllocator::new(1..=4));
        t.reserve(&id("pool1"), |_| ()).unwrap();
        t.reserve(&id("taken"), |_| ()).unwrap();
        assert!(matches!(
            t.rename(&id("pool1"), &id("taken")),
            Err(Error::AlreadyExists(_))
        ));
        assert!(t.contains(&id("pool1")) && t.contains(&id("taken")));
        t.rename(&id("pool1"), &id("mine")).unwrap();
        assert!(!t.contains(&id("pool1")) && t.contains(&id("mine")));
        assert!(matches!(
            t.rename(&id("pool1"), &id("x")),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn claimed_slots_are_not_allocated_until_released() {
        let t: Table<()> = Table::new(SlotAllocator::new(5..=5));
        let five = Slot::new(5).unwrap();
        assert!(t.claim(five));
        assert!(!t.claim(five));
        assert!(t.reserve(&id("a"), |_| ()).is_err());
        t.release(five);
        assert!(t.reserve(&id("a"), |_| ()).is_ok());
    }
}
