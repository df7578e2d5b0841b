//! The reconciler: makes the store's records agree with what each host agent
//! actually runs.
//!
//! # Design
//!
//! Every interval (30 s by default), and whenever asked
//! ([`Control::reconcile_now`](crate::Control::reconcile_now)), for each host:
//!
//! 1. ask the agent for its live sandboxes (`ListSandboxes`); if it does not
//!    answer, mark the host unreachable and change no record: a host we cannot
//!    see is not a host whose sandboxes are gone;
//! 2. read the host's records that are not stopped;
//! 3. a record with no live sandbox becomes `stopped`, with "expired" as the
//!    reason when its `expires_at` has passed and "lost" otherwise;
//! 4. a live sandbox whose record differs (state, address, generation,
//!    expiry) updates the record;
//! 5. a live sandbox whose record is `stopped` is destroyed: the control plane
//!    already told its caller it was gone (a create that timed out, say);
//! 6. a live sandbox with no record at all is adopted (a record is inserted
//!    from what the agent reports, and a warning logged) or destroyed, per
//!    [`OrphanPolicy`]. Adopting is the default because the only way to get
//!    one is a record lost or a sandbox made behind the control plane's back,
//!    and destroying someone's work on a guess is worse than showing it; the
//!    agent's own timeout still ends it.
//!
//! Races: the agent is listed *before* the store is read, and the control
//! plane writes a record before it asks an agent to create anything, so a
//! sandbox the agent listed always has its record visible by step 2. A record
//! written or changed after the listing began, or with a lifecycle call in
//! flight (the `busy` set), is skipped this round. Stopped records older than
//! the retention period are deleted at the end of each pass.
//!
//! # Limitations
//!
//! - Between passes the store can lag the host by up to one interval when the
//!   host's event stream (`watch.rs`, which applies expiries at once) is down.
//! - Only one control plane should reconcile a given host.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use wrenn_proto::wrenn::v1::{ListSandboxesRequest, Sandbox, SandboxRef};
use wrenn_types::SandboxId;

use crate::hosts::Host;
use crate::options::OrphanPolicy;
use crate::service::convert::{live_from_agent, record_from_agent};
use crate::state::ControlState;
use crate::store::{SandboxFilter, StoreError, now_ms};

/// How long one agent call of the reconciler may take.
const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a host could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("host {host}: cannot list its sandboxes: {message}")]
    Agent { host: String, message: String },
    #[error("host {host}: store failure while reconciling")]
    Store {
        host: String,
        #[source]
        source: StoreError,
    },
}

/// What one pass over one host changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub host_id: String,
    /// Live sandboxes the agent reported.
    pub live: usize,
    /// Records marked stopped, with the reason.
    pub stopped: Vec<(SandboxId, String)>,
    /// Records updated from the agent's view.
    pub updated: Vec<SandboxId>,
    /// Sandboxes with no record that got one.
    pub adopted: Vec<SandboxId>,
    /// Sandboxes destroyed on the host.
    pub destroyed: Vec<SandboxId>,
}

/// Runs passes; one at a time.
#[derive(Debug)]
pub struct Reconciler {
    state: Arc<ControlState>,
    orphan_policy: OrphanPolicy,
    stopped_retention: Duration,
    running: Mutex<()>,
    passes: AtomicU64,
}

impl Reconciler {
    pub(crate) fn new(
        state: Arc<ControlState>,
        orphan_policy: OrphanPolicy,
        stopped_retention: Duration,
    ) -> Self {
        Reconciler {
            state,
            orphan_policy,
            stopped_retention,
            running: Mutex::new(()),
            passes: AtomicU64::new(0),
        }
    }

    /// Passes every `interval` (the first at once) until `cancel`.
    pub(crate) async fn run(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            for res in self.reconcile_all().await {
                match res {
                    Ok(r)
                        if r.stopped.is_empty()
                            && r.updated.is_empty()
                            && r.adopted.is_empty()
                            && r.destroyed.is_empty() => {}
                    Ok(r) => tracing::info!(
                        host_id = %r.host_id, live = r.live, stopped = r.stopped.len(),
                        updated = r.updated.len(), adopted = r.adopted.len(), destroyed = r.destroyed.len(),
                        "reconciled"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %crate::error::Chain(&e), "reconcile pass failed")
                    }
                }
            }
        }
    }

    /// One pass over every host, then the retention purge.
    pub async fn reconcile_all(&self) -> Vec<Result<ReconcileReport, ReconcileError>> {
        let _one_at_a_time = self.running.lock().await;
        let mut out = Vec::new();
        for host in self.state.hosts.iter() {
            out.push(self.reconcile_host(host).await);
        }
        let retention =
            chrono::Duration::from_std(self.stopped_retention).unwrap_or(chrono::Duration::MAX);
        if let Some(cutoff) = now_ms().checked_sub_signed(retention) {
            match self.state.store.delete_stopped_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "deleted old stopped records"),
                Err(e) => {
                    tracing::warn!(error = %crate::error::Chain(&e), "cannot delete old stopped records")
                }
            }
        }
        self.passes.fetch_add(1, Ordering::Release);
        out
    }

    /// Passes completed so far (periodic and requested).
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Acquire)
    }

    async fn reconcile_host(&self, host: &Host) -> Result<ReconcileReport, ReconcileError> {
        let store_err = |source| ReconcileError::Store {
            host: host.id().to_owned(),
            source,
        };
        let started = now_ms();
        let listed = tokio::time::timeout(
            AGENT_CALL_TIMEOUT,
            host.client()
                .list_sandboxes(ListSandboxesRequest::default()),
        )
        .await;
        let live: Vec<Sandbox> = match listed {
            // A template build's sandboxes belong to the build.
            Ok(Ok(resp)) => resp
                .into_inner()
                .sandboxes
                .into_iter()
                .filter(|s| {
                    !s.spec.as_ref().is_some_and(|spec| {
                        spec.metadata
                            .contains_key(wrenn_types::spec::BUILD_METADATA_KEY)
                    })
                })
                .collect(),
            Ok(Err(status)) => {
                let message = crate::error::Chain(&status).to_string();
                host.mark_unreachable(message.clone());
                return Err(ReconcileError::Agent {
                    host: host.id().to_owned(),
                    message,
                });
            }
            Err(_) => {
                let message = format!("no answer within {}s", AGENT_CALL_TIMEOUT.as_secs());
                host.mark_unreachable(message.clone());
                return Err(ReconcileError::Agent {
                    host: host.id().to_owned(),
                    message,
                });
            }
        };
        host.mark_ready(live.len().try_into().unwrap_or(u32::MAX));

        let filter = SandboxFilter {
            host_id: Some(host.id().to_owned()),
            ..SandboxFilter::default()
        };
        let records = self
            .state
            .store
            .list_sandboxes(&filter)
            .await
            .map_err(store_err)?;
        let mut report = ReconcileReport {
            host_id: host.id().to_owned(),
            live: live.len(),
            ..ReconcileReport::default()
        };

        let mut live_by_id: HashMap<SandboxId, &Sandbox> = HashMap::new();
        for sb in &live {
            match sb.id.parse::<SandboxId>() {
                Ok(id) => {
                    live_by_id.insert(id, sb);
                }
                Err(e) => {
                    tracing::warn!(host_id = %host.id(), error = %e, "host reports a sandbox with an invalid id; ignored")
                }
            }
        }

        let mut recorded = HashSet::new();
        for rec in &records {
            recorded.insert(rec.id.clone());
            if self.state.busy.contains(&rec.id) || rec.updated_at >= started {
                continue;
            }
            match live_by_id.get(&rec.id) {
                Some(sb) => {
                    let update = live_from_agent(sb);
                    if !rec.matches(&update)
                        && self
                            .state
                            .store
                            .update_live(&rec.id, &update, now_ms())
                            .await
                            .map_err(store_err)?
                    {
                        report.updated.push(rec.id.clone());
                    }
                }
                None => {
                    let now = now_ms();
                    let reason = if rec.expires_at.is_some_and(|t| t <= now) {
                        format!(
                            "expired: its timeout ran out and host {} destroyed it",
                            host.id()
                        )
                    } else {
                        format!(
                            "lost: no longer on host {} (found by the reconciler)",
                            host.id()
                        )
                    };
                    if self
                        .state
                        .store
                        .mark_stopped(&rec.id, &reason, now)
                        .await
                        .map_err(store_err)?
                    {
                        tracing::info!(sandbox_id = %rec.id, host_id = %host.id(), %reason, "record marked stopped");
                        report.stopped.push((rec.id.clone(), reason));
                    }
                }
            }
        }

        for (id, sb) in live_by_id {
            if recorded.contains(&id) || self.state.busy.contains(&id) {
                continue;
            }
            let existing = self.state.store.get_sandbox(&id).await.map_err(store_err)?;
            match existing {
                Some(rec) if rec.state.is_stopped() => {
                    tracing::warn!(sandbox_id = %id, host_id = %host.id(), reason = %rec.stop_reason, "destroying a sandbox whose record is stopped");
                    if self.destroy(host, &id).await {
                        report.destroyed.push(id);
                    }
                }
                // Written after the listing began: judged next pass.
                Some(_) => {}
                None => match self.orphan_policy {
                    OrphanPolicy::Adopt => {
                        let rec = record_from_agent(id.clone(), sb, host.id(), now_ms());
                        match self.state.store.insert_sandbox(&rec).await {
                            Ok(()) | Err(StoreError::SandboxExists(_)) => {}
                            Err(e) => return Err(store_err(e)),
                        }
                        tracing::warn!(sandbox_id = %id, host_id = %host.id(), "adopted a live sandbox that had no record");
                        report.adopted.push(id);
                    }
                    OrphanPolicy::Destroy => {
                        tracing::warn!(sandbox_id = %id, host_id = %host.id(), "destroying a live sandbox that has no record");
                        if self.destroy(host, &id).await {
                            report.destroyed.push(id);
                        }
                    }
                },
            }
        }
        Ok(report)
    }

    /// Destroys `id` on `host`; true when it is gone afterwards.
    async fn destroy(&self, host: &Host, id: &SandboxId) -> bool {
        let mut client = host.client();
        let call = client.destroy_sandbox(SandboxRef {
            sandbox_id: id.to_string(),
        });
        match tokio::time::timeout(AGENT_CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => true,
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => true,
            Ok(Err(s)) => {
                tracing::warn!(sandbox_id = %id, host_id = %host.id(), error = %s.message(), "cannot destroy");
                false
            }
            Err(_) => {
                tracing::warn!(sandbox_id = %id, host_id = %host.id(), "destroy timed out");
                false
            }
        }
    }
}
