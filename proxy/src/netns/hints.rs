//! Which target last worked for an upstream (sandbox, generation, port).
//!
//! Pingora hands a pooled connection back only if the socket's peer address
//! equals the peer's address (`matches_fd`), so a connection to `127.0.0.1`
//! inside the netns is reusable only when the peer names `127.0.0.1`. The
//! connector therefore builds each peer with the address of the target that
//! worked last for its pool key, and tries that target first.
//!
//! A fixed table of atomics, indexed by the pool key: no lock, no allocation.
//! Two keys sharing a slot only overwrite each other's hint; a wrong or
//! missing hint costs one connect in the default order, never a wrong
//! connection (every target of a dial belongs to the same sandbox and port).

use std::sync::atomic::{AtomicU64, Ordering};

const SLOTS: usize = 1024;
const CODE_BITS: u64 = 0b11;

/// A target that worked, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    Direct = 1,
    LoopbackV4 = 2,
    LoopbackV6 = 3,
}

#[derive(Debug)]
pub(crate) struct Hints {
    slots: Box<[AtomicU64]>,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Hints {
    fn slot(&self, key: u64) -> &AtomicU64 {
        &self.slots[(key % SLOTS as u64) as usize]
    }

    pub(crate) fn get(&self, key: u64) -> Option<Hint> {
        let v = self.slot(key).load(Ordering::Relaxed);
        if v & !CODE_BITS != key & !CODE_BITS {
            return None;
        }
        match v & CODE_BITS {
            1 => Some(Hint::Direct),
            2 => Some(Hint::LoopbackV4),
            3 => Some(Hint::LoopbackV6),
            _ => None,
        }
    }

    pub(crate) fn set(&self, key: u64, hint: Hint) {
        self.slot(key)
            .store((key & !CODE_BITS) | hint as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_read_back_only_for_its_own_key() {
        let h = Hints::default();
        assert_eq!(h.get(42 << 2), None);
        h.set(42 << 2, Hint::LoopbackV4);
        assert_eq!(h.get(42 << 2), Some(Hint::LoopbackV4));
        // Same slot, other key: no hint, and setting it replaces the first.
        let other = (42 << 2) + ((SLOTS as u64) << 2);
        assert_eq!(h.get(other), None);
        h.set(other, Hint::LoopbackV6);
        assert_eq!(h.get(other), Some(Hint::LoopbackV6));
        assert_eq!(h.get(42 << 2), None);
        h.set(7, Hint::Direct);
        assert_eq!(h.get(7), Some(Hint::Direct));
    }
}
