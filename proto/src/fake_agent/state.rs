//! [`FakeState`]: what the fake agent holds (its sandboxes, the calls it
//! received, the outcome of uploads, the open watch streams) and the methods
//! tests script it with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

use super::SANDBOX_ADDRESS;
use crate::wrenn::v1::sandbox_event::Kind;
use crate::wrenn::v1::{Sandbox, SandboxEvent, SandboxSpec, SandboxState};

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Clean half-close: the file would be renamed into place.
    Committed {
        path: String,
        bytes: u64,
        in_order: bool,
    },
    /// The stream broke: nothing may be written.
    Aborted {
        path: String,
        bytes: u64,
        code: tonic::Code,
    },
}

/// One open `WatchSandboxes` stream. Unbounded: a slow watcher is never
/// dropped for falling behind (a test's events are few).
type Watcher = mpsc::UnboundedSender<Result<SandboxEvent, Status>>;

/// The fake agent's state, shared by its server and the test (also through
/// `Deref` on [`FakeAgent`](super::FakeAgent)). Survives a restart: pass it
/// to [`FakeAgent::start_on`](super::FakeAgent::start_on).
#[derive(Debug, Default)]
pub struct FakeState {
    /// Every call the fake received, as `"create <id>"`, `"pty closed <id>"`…
    pub calls: Mutex<Vec<String>>,
    /// The host's sandboxes by id. Changing it directly tells no watcher.
    pub sandboxes: Mutex<BTreeMap<String, Sandbox>>,
    /// Returned by the next CreateSandbox instead of creating.
    pub fail_create: Mutex<Option<Status>>,
    /// Chunks of `/big` handed to the transport so far.
    pub produced: AtomicU64,
    /// How each upload ended, in order.
    pub writes: Mutex<Vec<WriteOutcome>>,
    /// Data bytes received by uploads in progress.
    pub write_progress: AtomicU64,
    /// Open WatchSandboxes streams.
    watchers: Mutex<Vec<Watcher>>,
    watch_calls: AtomicUsize,
    break_snapshots: AtomicBool,
    generation: AtomicU64,
}

/// A sandbox as the agent reports it (no spec, no times).
pub fn sandbox(id: &str, address: &str, state: SandboxState, generation: u64) -> Sandbox {
    Sandbox {
        id: id.into(),
        state: state as i32,
        address: address.into(),
        generation,
        backend: "namespace".into(),
        ..Default::default()
    }
}

pub(super) fn not_found(id: &str) -> Status {
    Status::not_found(format!("sandbox {id} not found"))
}

fn event(kind: Kind, sandbox: Option<Sandbox>) -> SandboxEvent {
    SandboxEvent {
        kind: kind as i32,
        sandbox,
    }
}

impl FakeState {
    /// The calls received so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    pub(super) fn record(&self, call: String) {
        self.calls.lock().push(call);
    }

    /// How many sandboxes the host has.
    pub fn len(&self) -> usize {
        self.sandboxes.lock().len()
    }

    /// Whether the host has no sandbox.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.lock().is_empty()
    }

    /// Puts a running sandbox with `metadata` straight into the map (as if
    /// made behind the control plane's back), without an event.
    pub fn insert(&self, id: &str, metadata: &[(&str, &str)]) -> Sandbox {
        let sb = self.new_sandbox(
            id,
            SandboxSpec {
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                timeout_secs: 300,
                ..Default::default()
            },
        );
        self.sandboxes.lock().insert(id.to_owned(), sb.clone());
        sb
    }

    /// A running sandbox at [`SANDBOX_ADDRESS`] with the next generation,
    /// expiring after the spec's timeout (300 s when 0).
    pub(super) fn new_sandbox(&self, id: &str, spec: SandboxSpec) -> Sandbox {
        let now = SystemTime::now();
        let timeout = if spec.timeout_secs == 0 {
            300
        } else {
            spec.timeout_secs
        };
        Sandbox {
            id: id.to_owned(),
            state: SandboxState::Running as i32,
            spec: Some(spec),
            address: SANDBOX_ADDRESS.to_owned(),
            generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
            backend: "namespace".to_owned(),
            host_id: String::new(),
            created_at: Some(now.into()),
            expires_at: Some((now + Duration::from_secs(timeout.into())).into()),
            stop_reason: String::new(),
            netns: String::new(),
            unhealthy: String::new(),
        }
    }

    /// Sends a lifecycle event to every watcher; the map is left as it is.
    pub fn publish(&self, kind: Kind, sb: Sandbox) {
        self.change(|_| Some(event(kind, Some(sb))));
    }

    /// Records `sb` in the map (`Destroyed`: removes it) and sends a live
    /// event of `kind` for it, in one step: a watch opening meanwhile gets
    /// either the change in its snapshot or the event after it.
    pub fn emit(&self, kind: Kind, sb: Sandbox) {
        self.change(|map| {
            if kind == Kind::Destroyed {
                map.remove(&sb.id);
            } else {
                map.insert(sb.id.clone(), sb.clone());
            }
            Some(event(kind, Some(sb)))
        });
    }

    /// Adds or replaces `sb` without an event (as if it happened while the
    /// watcher was disconnected).
    pub fn set_quietly(&self, sb: Sandbox) {
        self.sandboxes.lock().insert(sb.id.clone(), sb);
    }

    /// Removes `id` without an event.
    pub fn remove_quietly(&self, id: &str) {
        self.sandboxes.lock().remove(id);
    }

    /// The host's TTL reaper at work: `id` ran out its timeout and is gone
    /// (`Destroyed`, with an expiry in the past).
    pub fn expire(&self, id: &str) {
        self.take(id, |sb| {
            sb.expires_at = Some((SystemTime::now() - Duration::from_secs(1)).into());
        });
    }

    /// Removes `id`, edited by `f`, and sends `Destroyed` for it, in one step
    /// (as [`FakeState::emit`]); `None` if there was no such sandbox.
    pub(super) fn take(&self, id: &str, f: impl FnOnce(&mut Sandbox)) -> Option<Sandbox> {
        let mut taken = None;
        self.change(|map| {
            let mut sb = map.remove(id)?;
            f(&mut sb);
            taken = Some(sb.clone());
            Some(event(Kind::Destroyed, Some(sb)))
        });
        taken
    }

    /// Changes sandbox `id` by `f` and sends `kind` for it, in one step (as
    /// [`FakeState::emit`]); NOT_FOUND if there is no such sandbox.
    pub(super) fn update(
        &self,
        id: &str,
        kind: Kind,
        f: impl FnOnce(&mut Sandbox),
    ) -> Result<Sandbox, Status> {
        let mut updated = None;
        self.change(|map| {
            let sb = map.get_mut(id)?;
            f(sb);
            updated = Some(sb.clone());
            Some(event(kind, Some(sb.clone())))
        });
        updated.ok_or_else(|| not_found(id))
    }

    /// Ends every open watch stream with UNAVAILABLE (the watcher must
    /// reconnect and resync).
    pub fn drop_streams(&self) {
        self.end_streams("fake agent dropped the stream");
    }

    pub(super) fn end_streams(&self, why: &str) {
        for w in self.watchers.lock().drain(..) {
            let _ = w.send(Err(Status::unavailable(why)));
        }
    }

    /// While `on`, every new watch stream sends the snapshot's sandboxes,
    /// then UNAVAILABLE instead of `SYNCED` (the watcher cannot resync).
    pub fn break_snapshots(&self, on: bool) {
        self.break_snapshots.store(on, Ordering::SeqCst);
    }

    /// WatchSandboxes calls received so far.
    pub fn watch_calls(&self) -> usize {
        self.watch_calls.load(Ordering::SeqCst)
    }

    /// Open watch streams.
    pub fn watchers(&self) -> usize {
        let mut watchers = self.watchers.lock();
        watchers.retain(|w| !w.is_closed());
        watchers.len()
    }

    /// A new watch stream: the snapshot (`Existing` per sandbox), `Synced`,
    /// then every event sent after it. Taken under the watchers' lock, which
    /// every change holds too, so no event falls between snapshot and
    /// subscription.
    pub(super) fn watch(&self) -> UnboundedReceiverStream<Result<SandboxEvent, Status>> {
        self.watch_calls.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watchers = self.watchers.lock();
        for sb in self.sandboxes.lock().values() {
            let _ = tx.send(Ok(event(Kind::Existing, Some(sb.clone()))));
        }
        if self.break_snapshots.load(Ordering::SeqCst) {
            let _ = tx.send(Err(Status::unavailable("fake agent broke the snapshot")));
        } else {
            let _ = tx.send(Ok(event(Kind::Synced, None)));
            watchers.push(tx);
        }
        UnboundedReceiverStream::new(rx)
    }

    /// Applies `f` to the map and sends the event it returns to every
    /// watcher, holding the watchers' lock throughout.
    fn change(&self, f: impl FnOnce(&mut BTreeMap<String, Sandbox>) -> Option<SandboxEvent>) {
        let mut watchers = self.watchers.lock();
        let ev = f(&mut self.sandboxes.lock());
        if let Some(ev) = ev {
            watchers.retain(|w| w.send(Ok(ev.clone())).is_ok());
        }
    }

    /// Runs `f` on sandbox `id`, or NOT_FOUND.
    pub(super) fn with_sandbox<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Sandbox) -> T,
    ) -> Result<T, Status> {
        let mut map = self.sandboxes.lock();
        let sb = map.get_mut(id).ok_or_else(|| not_found(id))?;
        Ok(f(sb))
    }

    /// NOT_FOUND unless sandbox `id` exists.
    pub(super) fn exists(&self, id: &str) -> Result<(), Status> {
        self.with_sandbox(id, |_| ())
    }
}
