//! One live sandbox as the agent holds it.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wrenn_proto::wrenn::v1 as pb;
use wrenn_types::SandboxId;
use wrenn_vmm::{Backend, SandboxHandle};

use crate::error::SandboxError;
use crate::guest::Guest;

/// Lifecycle state of a live sandbox (a destroyed one is out of the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Paused,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Paused => "paused",
        }
    }

    fn proto(self) -> pb::SandboxState {
        match self {
            State::Starting => pb::SandboxState::Starting,
            State::Running => pb::SandboxState::Running,
            State::Paused => pb::SandboxState::Paused,
        }
    }
}

#[derive(Debug)]
struct Mutable {
    state: State,
    /// Why the guest does not answer, while it does not (an adopted
    /// sandbox whose guest did not answer is kept and probed again).
    unhealthy: Option<String>,
    /// When the reaper destroys the sandbox.
    deadline: Instant,
    expires_at: SystemTime,
    timeout_secs: u32,
}

/// A sandbox in the manager's map.
#[derive(Debug)]
pub struct Sandbox {
    pub id: SandboxId,
    pub backend: Backend,
    pub slot: u16,
    pub address: Ipv4Addr,
    /// Host path of the sandbox's network namespace, if its loopback is reachable there.
    pub netns: Option<std::path::PathBuf>,
    /// Spec with defaults filled in, as `Sandbox.spec` reports it.
    pub spec: pb::SandboxSpec,
    /// Changes every time a sandbox (re)appears; keys the proxy's pools.
    pub generation: u64,
    pub created_at: SystemTime,
    /// The sandbox's directory (`agent.json` lives there, see [`super::kept`]).
    pub dir: std::path::PathBuf,
    /// The dedicated channel to the guest agent.
    pub guest: Guest,
    /// Cancelled when the sandbox is destroyed: ends every relay to it.
    pub cancel: CancellationToken,
    /// Serialises lifecycle operations (create, pause, resume, destroy).
    pub(crate) op: tokio::sync::Mutex<()>,
    m: Mutex<Mutable>,
    /// Why the sandbox went away, once it did.
    end_reason: Mutex<Option<String>>,
}

impl Sandbox {
    /// A sandbox created now that expires `timeout_secs` from now.
    pub fn new(
        handle: &SandboxHandle,
        spec: pb::SandboxSpec,
        generation: u64,
        state: State,
        timeout_secs: u32,
        cancel: CancellationToken,
    ) -> Self {
        let now = SystemTime::now();
        let kept = super::kept::Kept::new(
            now,
            now + Duration::from_secs(timeout_secs.into()),
            timeout_secs,
        );
        Self::restored(handle, spec, generation, state, kept, cancel)
    }

    /// A sandbox with the times an earlier agent kept for it (its deadline
    /// may have passed: the reaper then destroys it at once).
    pub fn restored(
        handle: &SandboxHandle,
        spec: pb::SandboxSpec,
        generation: u64,
        state: State,
        kept: super::kept::Kept,
        cancel: CancellationToken,
    ) -> Self {
        let left = kept
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Sandbox {
            id: handle.id.clone(),
            backend: handle.backend,
            slot: handle.slot,
            address: handle.address,
            netns: handle.netns.clone(),
            spec,
            generation,
            created_at: kept.created_at(),
            dir: handle.dir.clone(),
            guest: Guest::new(handle.guest_addr, &handle.guest_token),
            cancel,
            op: tokio::sync::Mutex::new(()),
            m: Mutex::new(Mutable {
                state,
                unhealthy: None,
                deadline: Instant::now() + left,
                expires_at: kept.expires_at(),
                timeout_secs: kept.timeout_secs,
            }),
            end_reason: Mutex::new(None),
        }
    }

    /// Marks the sandbox gone for `reason` and ends every relay to it.
    pub(crate) fn end(&self, reason: &str) {
        self.end_reason
            .lock()
            .get_or_insert_with(|| reason.to_owned());
        self.cancel.cancel();
    }

    /// What a relay to this sandbox ends with once it was cancelled.
    pub fn ended_status(&self) -> tonic::Status {
        match self.end_reason.lock().as_deref() {
            Some(reason) => {
                tonic::Status::aborted(format!("sandbox {} was destroyed ({reason})", self.id))
            }
            None => tonic::Status::unavailable(format!(
                "sandbox {}: the host agent is shutting down",
                self.id
            )),
        }
    }

    pub fn state(&self) -> State {
        self.m.lock().state
    }

    pub(crate) fn set_state(&self, state: State) {
        self.m.lock().state = state;
    }

    pub fn deadline(&self) -> Instant {
        self.m.lock().deadline
    }

    /// Writes the times the next agent needs to `agent.json`; a failure is
    /// logged (the sandbox would come back with the default timeout).
    pub(crate) fn keep(&self) {
        let kept = {
            let m = self.m.lock();
            super::kept::Kept::new(self.created_at, m.expires_at, m.timeout_secs)
        };
        if let Err(e) = super::kept::save(&self.dir, &kept) {
            tracing::warn!(sandbox_id = %self.id, dir = %self.dir.display(), error = %e, "keeping the sandbox's deadline on disk");
        }
    }

    /// Why the guest does not answer, if it does not.
    pub fn unhealthy(&self) -> Option<String> {
        self.m.lock().unhealthy.clone()
    }

    pub(crate) fn set_unhealthy(&self, why: Option<String>) {
        self.m.lock().unhealthy = why;
    }

    /// Expiry `timeout_secs` from now.
    pub(crate) fn set_timeout(&self, timeout_secs: u32) {
        let ttl = Duration::from_secs(timeout_secs.into());
        let mut m = self.m.lock();
        m.deadline = Instant::now() + ttl;
        m.expires_at = SystemTime::now() + ttl;
        m.timeout_secs = timeout_secs;
    }

    /// Pushes the deadline back by `by` (after a failed reap).
    pub(crate) fn postpone(&self, by: Duration) {
        let mut m = self.m.lock();
        m.deadline = Instant::now() + by;
        m.expires_at = SystemTime::now() + by;
    }

    /// The guest, if the sandbox can take interactive requests now.
    pub fn running_guest(&self) -> Result<&Guest, SandboxError> {
        if self.cancel.is_cancelled() {
            return Err(SandboxError::WrongState {
                id: self.id.clone(),
                state: "being destroyed",
            });
        }
        match self.state() {
            State::Running => Ok(&self.guest),
            s => Err(SandboxError::WrongState {
                id: self.id.clone(),
                state: s.name(),
            }),
        }
    }

    /// The record `ListSandboxes`, lifecycle calls and events report.
    pub fn to_proto(&self, host_id: &str) -> pb::Sandbox {
        let m = self.m.lock();
        let mut spec = self.spec.clone();
        spec.timeout_secs = m.timeout_secs;
        pb::Sandbox {
            id: self.id.to_string(),
            state: m.state.proto() as i32,
            spec: Some(spec),
            address: self.address.to_string(),
            generation: self.generation,
            backend: backend_name(self.backend).to_owned(),
            host_id: host_id.to_owned(),
            created_at: Some(self.created_at.into()),
            expires_at: Some(m.expires_at.into()),
            stop_reason: String::new(),
            netns: self
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            unhealthy: m.unhealthy.clone().unwrap_or_default(),
        }
    }

    /// The record of the sandbox once gone (`KIND_DESTROYED`).
    pub fn to_stopped_proto(&self, host_id: &str, reason: &str) -> pb::Sandbox {
        let mut p = self.to_proto(host_id);
        p.state = pb::SandboxState::Stopped as i32;
        p.stop_reason = reason.to_owned();
        p
    }
}

pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Namespace => "namespace",
        Backend::Firecracker => "firecracker",
    }
}
