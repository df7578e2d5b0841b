//! Lifecycle events for `WatchSandboxes`.
//!
//! Design: every change of the sandbox map and the event announcing it happen
//! under one short lock, and a watcher subscribes and takes its snapshot under
//! the same lock. So a watcher's snapshot plus the live events it receives
//! afterwards describe every change exactly once, in order.
//!
//! Limitations: live events go through a broadcast channel of
//! [`EVENT_CAPACITY`] events. A watcher that falls that far behind is told so
//! (its stream ends with `DATA_LOSS`) and must watch again for a fresh
//! snapshot; nothing is silently skipped.

use parking_lot::Mutex;
use tokio::sync::broadcast;
use wrenn_proto::wrenn::v1::{Sandbox, SandboxEvent, sandbox_event::Kind};

/// Live events a watcher may fall behind before its stream is ended.
pub const EVENT_CAPACITY: usize = 4096;

#[derive(Debug)]
pub struct EventHub {
    lock: Mutex<()>,
    tx: broadcast::Sender<SandboxEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            lock: Mutex::new(()),
            tx: broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

/// An event. Watchers learn where and in what state sandboxes are, never
/// their environment (it may hold secrets, and up to the spec's size cap):
/// `spec.env` is emptied.
pub fn event(kind: Kind, mut sandbox: Option<Sandbox>) -> SandboxEvent {
    if let Some(spec) = sandbox.as_mut().and_then(|s| s.spec.as_mut()) {
        spec.env.clear();
    }
    SandboxEvent {
        kind: kind as i32,
        sandbox,
    }
}

impl EventHub {
    /// Applies `change` (a mutation of the sandbox map) and publishes the event
    /// it returns, atomically with respect to [`EventHub::subscribe`].
    pub fn publish<R>(&self, change: impl FnOnce() -> (R, Option<SandboxEvent>)) -> R {
        let _g = self.lock.lock();
        let (r, ev) = change();
        if let Some(ev) = ev {
            // No receivers is not an error: nobody is watching.
            let _ = self.tx.send(ev);
        }
        r
    }

    /// A receiver of every later event and the snapshot `snapshot` returns,
    /// taken at the same instant.
    pub fn subscribe<S>(
        &self,
        snapshot: impl FnOnce() -> S,
    ) -> (S, broadcast::Receiver<SandboxEvent>) {
        let _g = self.lock.lock();
        (snapshot(), self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_live_events_do_not_overlap() {
        let hub = EventHub::default();
        let sb = |id: &str| Sandbox {
            id: id.into(),
            ..Default::default()
        };
        let mut map = vec!["a".to_string()];
        hub.publish(|| ((), Some(event(Kind::Created, Some(sb("a"))))));
        let (snap, mut rx) = hub.subscribe(|| map.clone());
        hub.publish(|| {
            map.push("b".into());
            ((), Some(event(Kind::Created, Some(sb("b")))))
        });
        assert_eq!(snap, vec!["a".to_string()]);
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.sandbox.unwrap().id, "b");
        assert!(rx.try_recv().is_err());
    }
}
