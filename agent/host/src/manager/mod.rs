//! The sandbox manager: the live truth of which sandboxes run on this host.
//!
//! Design: a `DashMap` from id to [`Sandbox`] holds every live sandbox. A
//! create reserves its id, is admitted against free memory and disk, asks the
//! runtime for the sandbox, opens the sandbox's own guest channel and waits
//! for the guest's health; any failure destroys what was made. Creates run in
//! their own task so a caller hanging up half-way cannot leave a half-made
//! sandbox behind. Lifecycle operations on one sandbox are serialised by its
//! `op` lock; each change of the map is published as a [`events`] event.
//! A TTL reaper (`reaper.rs`) destroys sandboxes past their deadline.
//!
//! Limitations: the deadline applies in every state, paused included (a
//! paused namespace sandbox still holds its memory); SetTimeout extends it.

pub mod admission;
mod create;
pub mod events;
pub mod kept;
pub mod pool;
mod reaper;
pub mod sandbox;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wrenn_proto::wrenn::v1::{self as pb, sandbox_event::Kind};
use wrenn_types::SandboxId;
use wrenn_vmm::Runtime;

use crate::error::SandboxError;
use crate::spec::{self, Limits};
use admission::Admission;
use events::{EventHub, event};
pub use sandbox::{Sandbox, State};

/// Most bytes of the guest's own output quoted in a readiness error.
pub const GUEST_OUTPUT_MAX: usize = 4096;
/// How long a sandbox whose reaping failed waits for the next attempt.
const REAP_RETRY: Duration = Duration::from_secs(30);

/// What the manager needs from the agent's configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub host_id: String,
    pub dir: PathBuf,
    pub limits: Limits,
    pub guest_ready_timeout: Duration,
    pub guest_poll_interval: Duration,
    pub admission: admission::Policy,
    /// Sandboxes of the default shape kept ready for creates ([`pool`]).
    pub pool_size: usize,
    pub pool_template: String,
}

pub struct Manager {
    runtime: Arc<dyn Runtime>,
    cfg: ManagerConfig,
    sandboxes: DashMap<SandboxId, Arc<Sandbox>>,
    /// Ids whose create is in progress but not yet in `sandboxes`.
    creating: Mutex<HashSet<SandboxId>>,
    /// When a caller's create last began or ended (the pool refills only
    /// after a quiet moment).
    last_create: Mutex<tokio::time::Instant>,
    admission: Admission,
    pool: pool::Pool,
    pub(crate) events: EventHub,
    generation: AtomicU64,
    /// Wakes the reaper when a deadline moved earlier.
    reaper_wake: Notify,
    accepting: AtomicBool,
    /// Every create holds it shared; shutdown takes it exclusively to wait
    /// for creates in flight.
    create_gate: tokio::sync::RwLock<()>,
    /// Parent of every sandbox's token; cancelled at shutdown.
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("backend", &self.runtime.backend())
            .field("sandboxes", &self.sandboxes.len())
            .finish()
    }
}

impl Manager {
    pub fn new(runtime: Arc<dyn Runtime>, cfg: ManagerConfig) -> Arc<Self> {
        let admission = Admission::new(cfg.dir.clone(), cfg.admission);
        let pool = pool::Pool::new(cfg.pool_size);
        // Seeded from the clock so generations keep growing across restarts.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Arc::new(Manager {
            runtime,
            cfg,
            sandboxes: DashMap::new(),
            creating: Mutex::new(HashSet::new()),
            last_create: Mutex::new(tokio::time::Instant::now()),
            admission,
            pool,
            events: EventHub::default(),
            generation: AtomicU64::new(seed),
            reaper_wake: Notify::new(),
            accepting: AtomicBool::new(true),
            create_gate: tokio::sync::RwLock::new(()),
            shutdown: CancellationToken::new(),
        })
    }

    pub fn host_id(&self) -> &str {
        &self.cfg.host_id
    }

    /// `$WRENN_DIR`.
    pub fn dir(&self) -> &std::path::Path {
        &self.cfg.dir
    }

    pub fn limits(&self) -> Limits {
        self.cfg.limits
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Cancelled when the agent shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn len(&self) -> usize {
        self.sandboxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty()
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The live sandbox `raw` names.
    pub fn get(&self, raw: &str) -> Result<Arc<Sandbox>, SandboxError> {
        let id = spec::parse_id(raw)?;
        self.sandboxes
            .get(&id)
            .map(|e| e.value().clone())
            .ok_or(SandboxError::NotFound(id))
    }

    /// What the host reports of `sb` (as in [`list`](Self::list)).
    pub fn record(&self, sb: &Sandbox) -> pb::Sandbox {
        sb.to_proto(&self.cfg.host_id)
    }

    pub fn list(&self) -> Vec<pb::Sandbox> {
        let mut v: Vec<_> = self
            .sandboxes
            .iter()
            .map(|e| e.value().to_proto(&self.cfg.host_id))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Adds `sb` to the map and announces it.
    fn insert(&self, sb: Arc<Sandbox>, kind: Kind) {
        let record = sb.to_proto(&self.cfg.host_id);
        self.events.publish(|| {
            self.sandboxes.insert(sb.id.clone(), sb);
            ((), Some(event(kind, Some(record))))
        });
    }

    /// Sets the state and announces it; returns the new record.
    fn transition(&self, sb: &Sandbox, state: State, kind: Kind) -> pb::Sandbox {
        self.events.publish(|| {
            sb.set_state(state);
            let record = sb.to_proto(&self.cfg.host_id);
            (record.clone(), Some(event(kind, Some(record))))
        })
    }

    /// Announces the current record of `sb` as `kind` (a change that is not
    /// a state change, e.g. a guest answering again).
    fn announce(&self, sb: &Sandbox, kind: Kind) {
        self.events.publish(|| {
            let record = sb.to_proto(&self.cfg.host_id);
            ((), Some(event(kind, Some(record))))
        });
    }

    /// Removes `sb` from the map (announcing it) and has the runtime destroy
    /// it. Used when a create fails half-way; the caller holds `sb.op`.
    async fn remove_and_destroy(&self, sb: &Sandbox, reason: &str) {
        sb.end(reason);
        if let Err(e) = self.runtime.destroy(&sb.id).await {
            warn!(sandbox_id = %sb.id, error = %crate::error::chain(&e), "destroy after failed create");
        }
        self.remove(sb, reason);
    }

    fn remove(&self, sb: &Sandbox, reason: &str) {
        let record = sb.to_stopped_proto(&self.cfg.host_id, reason);
        self.events.publish(|| {
            self.sandboxes.remove(&sb.id);
            ((), Some(event(Kind::Destroyed, Some(record))))
        });
        self.admission.release(&sb.id);
    }

    /// The host's admission (free resources, what sandboxes were admitted for).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The warm pool of sandboxes made ahead of time.
    pub fn pool(&self) -> &pool::Pool {
        &self.pool
    }

    /// Destroys a live sandbox: relays end, the runtime removes it, watchers
    /// hear `KIND_DESTROYED`.
    pub async fn destroy(&self, raw: &str, reason: &str) -> Result<(), SandboxError> {
        let sb = self.get(raw)?;
        self.destroy_sandbox(&sb, reason).await
    }

    async fn destroy_sandbox(&self, sb: &Arc<Sandbox>, reason: &str) -> Result<(), SandboxError> {
        let _op = sb.op.lock().await;
        if !self
            .sandboxes
            .get(&sb.id)
            .is_some_and(|e| Arc::ptr_eq(e.value(), sb))
        {
            // Destroyed while we waited for the lock.
            return Ok(());
        }
        sb.end(reason);
        self.runtime
            .destroy(&sb.id)
            .await
            .map_err(SandboxError::runtime("destroy", &sb.id))?;
        self.remove(sb, reason);
        info!(sandbox_id = %sb.id, reason, "sandbox destroyed");
        Ok(())
    }

    pub async fn pause(&self, raw: &str) -> Result<pb::Sandbox, SandboxError> {
        let sb = self.get(raw)?;
        let _op = sb.op.lock().await;
        self.require(&sb, State::Running)?;
        self.runtime
            .pause(&sb.id)
            .await
            .map_err(SandboxError::runtime("pause", &sb.id))?;
        Ok(self.transition(&sb, State::Paused, Kind::Paused))
    }

    pub async fn resume(&self, raw: &str) -> Result<pb::Sandbox, SandboxError> {
        let sb = self.get(raw)?;
        let _op = sb.op.lock().await;
        self.require(&sb, State::Paused)?;
        self.runtime
            .resume(&sb.id)
            .await
            .map_err(SandboxError::runtime("resume", &sb.id))?;
        Ok(self.transition(&sb, State::Running, Kind::Resumed))
    }

    /// Checks `sb` is still live and in `want`.
    fn require(&self, sb: &Arc<Sandbox>, want: State) -> Result<(), SandboxError> {
        if !self.sandboxes.contains_key(&sb.id) {
            return Err(SandboxError::NotFound(sb.id.clone()));
        }
        match sb.state() {
            s if s == want => Ok(()),
            s => Err(SandboxError::WrongState {
                id: sb.id.clone(),
                state: s.name(),
            }),
        }
    }

    /// New deadline `timeout_secs` from now (0: the default timeout).
    pub fn set_timeout(&self, raw: &str, timeout_secs: u32) -> Result<pb::Sandbox, SandboxError> {
        let sb = self.get(raw)?;
        let secs = spec::timeout("timeout_secs", timeout_secs, self.cfg.limits)?;
        sb.set_timeout(secs);
        sb.keep();
        self.reaper_wake.notify_one();
        Ok(sb.to_proto(&self.cfg.host_id))
    }

    pub async fn metrics(&self, raw: &str) -> Result<pb::SandboxMetrics, SandboxError> {
        let sb = self.get(raw)?;
        let m = self
            .runtime
            .metrics(&sb.id)
            .await
            .map_err(SandboxError::runtime("read metrics of", &sb.id))?;
        Ok(pb::SandboxMetrics {
            sandbox_id: sb.id.to_string(),
            cpu_usage_usec: m.cpu_usage_usec,
            memory_bytes: m.memory_bytes,
            memory_limit_bytes: m.memory_limit_bytes,
            disk_used_bytes: m.disk_used_bytes,
            disk_limit_bytes: m.disk_limit_bytes,
            pids: m.pids,
        })
    }

    /// Stops creates, then destroys every sandbox (or, with `keep`, lets them
    /// run on for the next agent to adopt) and ends every relay.
    pub async fn shutdown(&self, keep: bool) {
        self.accepting.store(false, Ordering::Release);
        drop(self.create_gate.write().await);
        // Pooled sandboxes are nobody's yet: never left for the next agent.
        self.drain_pool().await;
        let all: Vec<Arc<Sandbox>> = self.sandboxes.iter().map(|e| e.value().clone()).collect();
        if keep {
            info!(
                count = all.len(),
                "leaving sandboxes running for the next agent"
            );
            self.shutdown.cancel();
            self.sandboxes.clear();
            return;
        }
        let results = futures::future::join_all(
            all.iter()
                .map(|sb| self.destroy_sandbox(sb, "agent shutdown")),
        )
        .await;
        for (sb, r) in all.iter().zip(results) {
            if let Err(e) = r {
                warn!(sandbox_id = %sb.id, error = %crate::error::chain(&e), "destroy at shutdown");
            }
        }
        self.shutdown.cancel();
    }

    /// The TTL reaper, the host monitor (low memory or disk, see
    /// [`admission`]) and the pool's filler ([`pool`]), in one task; it
    /// stops at shutdown.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let m = self.clone();
        let monitor = async move {
            let mut tick = tokio::time::interval(admission::MONITOR_INTERVAL);
            loop {
                tokio::select! {
                    _ = m.shutdown.cancelled() => break,
                    _ = tick.tick() => m.admission.observe(),
                }
            }
        };
        let reaper = reaper::run(self.clone());
        let pool = self.clone().fill_pool();
        tokio::spawn(async move {
            tokio::join!(reaper, monitor, pool);
        })
    }
}
