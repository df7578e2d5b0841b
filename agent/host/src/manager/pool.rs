//! The warm pool: sandboxes of the default shape (of the configured
//! template) made ahead of time, running with a healthy guest, handed out by
//! creates.
//!
//! Design: one filler task keeps `pool_size` sandboxes ready, one create at
//! a time and only once no caller's create has been in flight for
//! [`QUIET`], so it never competes with the creates it exists to speed up. A create whose spec a
//! running sandbox can take (the default template, size and network; any id,
//! environment, metadata and timeout) takes one: the runtime renames it
//! (directory, cgroups, hostname, record: `Runtime::assign`), the guest
//! learns its id, environment and envd access token
//! (`wrenn.v1.Guest/Assign`; a pooled sandbox has no token before), and it is
//! announced like any new sandbox — a few milliseconds instead of a full
//! create. Anything else, or an empty pool, takes the normal path.
//!
//! Pooled sandboxes are counted by admission like sandboxes (they hold the
//! same resources) but are not listed, announced or reaped. A create refused
//! for lack of a resource or a slot first destroys a pooled sandbox and tries
//! again, so the pool never stands between a caller and the host's capacity.
//! They are destroyed at shutdown, and the next agent destroys any a crash
//! left (their record carries [`MARK`]).
//!
//! Limitations: processes that run before the hand-out (the guest itself)
//! keep the environment they started with; a sandbox handed out shows its
//! pool creation time in the kernel (process start times), not the create's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;
use tracing::{debug, info, warn};
use wrenn_proto::wrenn::v1 as pb;
use wrenn_types::SandboxId;
use wrenn_vmm::{SandboxHandle, SandboxSpec, steps};

use super::Manager;
use super::admission::register;
use crate::error::SandboxError;
use crate::guest::Guest;
use crate::spec;

/// Metadata key of a pooled sandbox's record.
pub const MARK: &str = "wrenn-pool";
/// How long no caller's create must have been in flight before the filler
/// makes a sandbox: the requests of a burst arrive a few milliseconds
/// apart, and a refill started between two of them would compete with the
/// rest of the burst for the CPU.
const QUIET: Duration = Duration::from_millis(50);
/// Longest pause of the filler after a failed create.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A ready sandbox and its guest's channel (connected by the readiness probe).
pub(super) struct Pooled {
    pub handle: SandboxHandle,
    pub guest: Guest,
}

pub struct Pool {
    size: usize,
    handed_out: std::sync::atomic::AtomicU64,
    ready: Mutex<VecDeque<Pooled>>,
    wake: Notify,
}

impl Pool {
    pub fn new(size: usize) -> Self {
        Pool {
            size,
            handed_out: std::sync::atomic::AtomicU64::new(0),
            ready: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        }
    }

    /// How many sandboxes are ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().len()
    }

    /// How many creates a pooled sandbox served.
    pub fn handed_out(&self) -> u64 {
        self.handed_out.load(Ordering::Relaxed)
    }

    /// Takes a ready sandbox `spec` can be handed, if any.
    pub(super) fn take_for(&self, spec: &SandboxSpec) -> Option<Pooled> {
        let mut ready = self.ready.lock();
        let i = ready
            .iter()
            .position(|p| p.handle.spec.fixed_difference(spec).is_none())?;
        let taken = ready.remove(i);
        READY.set(ready.len() as i64);
        self.wake.notify_one();
        taken
    }

    /// Takes any ready sandbox (to destroy it).
    fn take_any(&self) -> Option<Pooled> {
        let mut ready = self.ready.lock();
        let taken = ready.pop_back();
        READY.set(ready.len() as i64);
        taken
    }

    fn push(&self, p: Pooled) {
        let mut ready = self.ready.lock();
        ready.push_back(p);
        READY.set(ready.len() as i64);
    }
}

impl Manager {
    /// The spec pooled sandboxes are made with: every default, marked.
    fn pool_spec(&self) -> Result<spec::ValidSpec, SandboxError> {
        let id: SandboxId = format!("pool{}", SandboxId::generate()).parse().map_err(
            |e: wrenn_types::InvalidSandboxId| SandboxError::invalid("sandbox_id", e.to_string()),
        )?;
        let shape = pb::SandboxSpec {
            template: self.cfg.pool_template.clone(),
            ..Default::default()
        };
        let mut valid = spec::validate(id, &shape, self.cfg.limits)?;
        valid
            .runtime
            .metadata
            .insert(MARK.to_owned(), "1".to_owned());
        // No envd access token until a create takes it: its guest refuses
        // envd's calls until `Assign` gives it the create's.
        valid.runtime.envd_access_token.clear();
        valid.proto.envd_access_token.clear();
        Ok(valid)
    }

    /// Keeps the pool full until shutdown (see the module docs).
    pub(super) async fn fill_pool(self: Arc<Self>) {
        let stop = self.shutdown.clone();
        if self.pool.size > 0 && !self.runtime.can_assign() {
            warn!(
                backend = ?self.runtime.backend(),
                pool_size = self.pool.size,
                "this backend cannot hand out sandboxes made ahead of time; no warm pool"
            );
            return;
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            if stop.is_cancelled() {
                return;
            }
            if self.pool.ready() >= self.pool.size {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.pool.wake.notified() => {}
                }
                continue;
            }
            let quiet_for = self.last_create.lock().elapsed();
            if !self.creating.lock().is_empty() || quiet_for < QUIET {
                let wait = QUIET
                    .saturating_sub(quiet_for)
                    .max(Duration::from_millis(5));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            match self.make_pooled().await {
                Ok(true) => backoff = Duration::from_millis(500),
                Ok(false) => return,
                Err(e) => {
                    warn!(error = %crate::error::chain(&e), retry_in_ms = backoff.as_millis() as u64, "making a pooled sandbox");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Makes one pooled sandbox and adds it to the pool before the create
    /// gate is released (shutdown, which drains the pool after taking the
    /// gate, then sees it); `false` once the agent stops accepting.
    async fn make_pooled(&self) -> Result<bool, SandboxError> {
        let _gate = self.create_gate.read().await;
        if !self.accepting.load(Ordering::Acquire) {
            return Ok(false);
        }
        let valid = self.pool_spec()?;
        let id = valid.runtime.id.clone();
        let ticket = self.admission.admit(
            &id,
            valid.runtime.memory_mb.into(),
            valid.runtime.disk_mb.into(),
        )?;
        let handle = self
            .runtime
            .create(valid.runtime)
            .await
            .map_err(SandboxError::runtime("create", &id))?;
        let made = async {
            self.runtime
                .start(&id)
                .await
                .map_err(SandboxError::runtime("start", &id))?;
            let guest = Guest::new(handle.guest_addr, &handle.guest_token);
            guest
                .wait_ready(self.cfg.guest_poll_interval, self.cfg.guest_ready_timeout)
                .await
                .map_err(|last_error| SandboxError::Internal {
                    id: id.clone(),
                    reason: format!("pooled sandbox's guest not ready: {last_error}"),
                })?;
            Ok(guest)
        }
        .await;
        match made {
            Ok(guest) => {
                ticket.keep();
                debug!(sandbox_id = %handle.id, "pooled sandbox ready");
                self.pool.push(Pooled { handle, guest });
                Ok(true)
            }
            Err(e) => {
                if let Err(d) = self.runtime.destroy(&id).await {
                    warn!(sandbox_id = %id, error = %crate::error::chain(&d), "destroying a failed pooled sandbox");
                }
                Err(e)
            }
        }
    }

    /// Hands a pooled sandbox to the create of `valid`; `Err` leaves nothing
    /// of the pooled sandbox behind (the caller then creates normally).
    pub(super) async fn hand_out(
        &self,
        p: Pooled,
        valid: &spec::ValidSpec,
    ) -> Result<(SandboxHandle, Guest), SandboxError> {
        let from = p.handle.id.clone();
        let id = valid.runtime.id.clone();
        // Host side (names) and guest side (environment, hosts file) do not
        // depend on each other: both at once. Whichever fails, the sandbox
        // is destroyed under the name it has then.
        let (renamed, told) = tokio::join!(
            self.runtime.assign(&from, valid.runtime.clone()),
            steps::timed("assign_guest", p.guest.assign(&valid.runtime)),
        );
        let handle = match (renamed, told) {
            (Ok(h), Ok(())) => h,
            (Err(e), _) => {
                self.destroy_pooled(&from).await;
                return Err(SandboxError::runtime("hand out pooled sandbox as", &id)(e));
            }
            (Ok(_), Err(e)) => {
                self.destroy_pooled(&id).await;
                self.admission.release(&from);
                return Err(SandboxError::Internal {
                    id,
                    reason: format!("the pooled sandbox's guest refused its new id: {e}"),
                });
            }
        };
        self.admission.release(&from);
        self.admission.adopt(
            &id,
            valid.runtime.memory_mb.into(),
            valid.runtime.disk_mb.into(),
        );
        HANDED_OUT.inc();
        self.pool.handed_out.fetch_add(1, Ordering::Relaxed);
        Ok((handle, p.guest))
    }

    async fn destroy_pooled(&self, id: &SandboxId) {
        if let Err(e) = self.runtime.destroy(id).await {
            warn!(sandbox_id = %id, error = %crate::error::chain(&e), "destroying a pooled sandbox");
        }
        self.admission.release(id);
    }

    /// Destroys one pooled sandbox to make room for a caller's create;
    /// whether there was one.
    pub(super) async fn evict_pooled(&self) -> bool {
        let Some(p) = self.pool.take_any() else {
            return false;
        };
        info!(sandbox_id = %p.handle.id, "destroying a pooled sandbox to make room");
        self.destroy_pooled(&p.handle.id).await;
        true
    }

    /// Destroys every pooled sandbox (shutdown).
    pub(super) async fn drain_pool(&self) {
        let all: Vec<Pooled> = std::iter::from_fn(|| self.pool.take_any()).collect();
        futures::future::join_all(all.iter().map(|p| self.destroy_pooled(&p.handle.id))).await;
    }
}

/// Whether a sandbox found at start-up is a pooled one a previous agent left.
pub fn is_pooled(h: &SandboxHandle) -> bool {
    h.spec.metadata.contains_key(MARK)
}

static READY: LazyLock<IntGauge> = LazyLock::new(|| {
    let g = IntGauge::new(
        "wrenn_pool_ready",
        "Pooled sandboxes ready to be handed out",
    )
    .expect("valid gauge");
    register(Box::new(g.clone()));
    g
});
static HANDED_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    let c = IntCounter::new(
        "wrenn_pool_handed_out_total",
        "Creates served by a pooled sandbox",
    )
    .expect("valid counter");
    register(Box::new(c.clone()));
    c
});
