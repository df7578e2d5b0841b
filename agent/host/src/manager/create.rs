//! Creating sandboxes (admission, runtime create and start, readiness) and
//! adopting those a previous agent left running.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};
use wrenn_proto::wrenn::v1::{self as pb, sandbox_event::Kind};
use wrenn_types::SandboxId;
use wrenn_vmm::SandboxHandle;
use wrenn_vmm::steps;

use super::{GUEST_OUTPUT_MAX, Manager, Sandbox, State};
use crate::error::SandboxError;
use crate::spec;

/// How long a sandbox of `template` may spend in its READY check (see
/// [`crate::build`]): 0 for templates without one.
fn ready_check_time(dir: &std::path::Path, template: &str) -> Duration {
    if template.is_empty() || template.starts_with(wrenn_vmm::image::STEP_TEMPLATE_PREFIX) {
        return Duration::ZERO;
    }
    let file = wrenn_vmm::image::images_dir(dir)
        .join(template)
        .join(crate::build::DEFAULTS_FILE);
    match crate::build::Defaults::load(&file) {
        Ok(d) => d
            .ready
            .map_or(Duration::ZERO, |r| Duration::from_millis(r.timeout_ms)),
        Err(e) => {
            warn!(template, error = %e, "reading the template's defaults");
            Duration::ZERO
        }
    }
}

impl Manager {
    /// Creates, starts and waits for a sandbox. Runs in its own task: a caller
    /// that goes away does not interrupt it.
    pub async fn create(
        self: &Arc<Self>,
        req: pb::CreateSandboxRequest,
    ) -> Result<pb::Sandbox, SandboxError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(SandboxError::ShuttingDown);
        }
        let id = spec::sandbox_id(&req.sandbox_id)?;
        let valid = spec::validate(id, &req.spec.unwrap_or_default(), self.cfg.limits)?;
        self.create_checked(valid).await
    }

    /// Creates a sandbox from a spec made by the agent itself (a template
    /// build's sandboxes, whose template may be a cached step, a name no
    /// request may give).
    pub(crate) async fn create_checked(
        self: &Arc<Self>,
        valid: spec::ValidSpec,
    ) -> Result<pb::Sandbox, SandboxError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(SandboxError::ShuttingDown);
        }
        let id = valid.runtime.id.clone();
        let this = self.clone();
        tokio::spawn(async move { this.create_task(valid).await })
            .await
            .unwrap_or_else(|e| {
                Err(SandboxError::Internal {
                    id,
                    reason: e.to_string(),
                })
            })
    }

    async fn create_task(
        self: Arc<Self>,
        valid: spec::ValidSpec,
    ) -> Result<pb::Sandbox, SandboxError> {
        let id = valid.runtime.id.clone();
        let _gate = self.create_gate.read().await;
        if !self.accepting.load(Ordering::Acquire) {
            return Err(SandboxError::ShuttingDown);
        }
        let started = tokio::time::Instant::now();
        let _reservation = IdReservation::take(&self, &id)?;
        let pooled = match self.pool.take_for(&valid.runtime) {
            Some(p) => match self.hand_out(p, &valid).await {
                Ok(handed) => Some(handed),
                Err(e) => {
                    warn!(sandbox_id = %id, error = %crate::error::chain(&e), "handing out a pooled sandbox failed; creating one");
                    None
                }
            },
            None => None,
        };
        let from_pool = pooled.is_some();
        let (handle, guest, ticket) = match pooled {
            Some((handle, guest)) => (handle, Some(guest), None),
            None => {
                let (ticket, handle) = self.admit_and_create(&valid).await?;
                (handle, None, Some(ticket))
            }
        };
        let mut sb = Sandbox::new(
            &handle,
            valid.proto,
            self.next_generation(),
            State::Starting,
            valid.timeout_secs,
            self.shutdown.child_token(),
        );
        if let Some(guest) = guest {
            // The pooled sandbox's channel, connected already.
            sb.guest = guest;
        }
        let sb = Arc::new(sb);
        // Held until the guest is ready: lifecycle calls wait for the create.
        let op = sb.op.lock().await;
        sb.keep();
        self.insert(sb.clone(), Kind::Created);
        // Counted until `remove` (a pooled sandbox is counted already).
        if let Some(ticket) = ticket {
            ticket.keep();
        }
        drop(_reservation);

        if !from_pool {
            self.start_and_wait(&sb, started).await?;
        }
        // The deadline was set when the runtime made the sandbox (a SetTimeout
        // while it was starting moved it); the reaper skipped it until now.
        let record = self.transition(&sb, State::Running, Kind::Running);
        drop(op);
        self.reaper_wake.notify_one();
        steps::observe("total", started.into_std());
        info!(sandbox_id = %id, address = %sb.address, generation = sb.generation,
              ms = started.elapsed().as_millis() as u64, pooled = from_pool, "sandbox running");
        Ok(record)
    }

    /// Admits the create and has the runtime make the sandbox; a refusal for
    /// room or a slot first destroys a pooled sandbox and tries again.
    async fn admit_and_create(
        &self,
        valid: &spec::ValidSpec,
    ) -> Result<(super::admission::Ticket<'_>, SandboxHandle), SandboxError> {
        let id = &valid.runtime.id;
        loop {
            let admitted = steps::time("admission", || {
                self.admission.admit(
                    id,
                    valid.runtime.memory_mb.into(),
                    valid.runtime.disk_mb.into(),
                )
            });
            let ticket = match admitted {
                Ok(t) => t,
                Err(e) if self.evict_pooled().await => {
                    info!(sandbox_id = %id, refused = %e, "made room by destroying a pooled sandbox");
                    continue;
                }
                Err(e) => return Err(e),
            };
            match steps::timed("runtime_create", self.runtime.create(valid.runtime.clone())).await {
                Ok(handle) => return Ok((ticket, handle)),
                Err(wrenn_vmm::Error::SlotsExhausted { .. }) if self.evict_pooled().await => {
                    drop(ticket);
                }
                Err(e) => return Err(SandboxError::runtime("create", id)(e)),
            }
        }
    }

    /// Starts a created sandbox and waits for its guest; on failure the
    /// sandbox is removed and destroyed. The caller holds `sb.op`.
    async fn start_and_wait(
        &self,
        sb: &Sandbox,
        started: tokio::time::Instant,
    ) -> Result<(), SandboxError> {
        let id = &sb.id;
        if let Err(source) = steps::timed("runtime_start", self.runtime.start(id)).await {
            self.remove_and_destroy(sb, "start failed").await;
            return Err(SandboxError::runtime("start", id)(source));
        }
        // A template whose READY check decides readiness gets its time on top.
        let wait =
            self.cfg.guest_ready_timeout + ready_check_time(&self.cfg.dir, &sb.spec.template);
        let ready = steps::timed(
            "guest_ready",
            sb.guest.wait_ready(self.cfg.guest_poll_interval, wait),
        )
        .await;
        if let Err(last_error) = ready {
            let output = self
                .runtime
                .guest_output(id, GUEST_OUTPUT_MAX)
                .unwrap_or_else(|| "(none captured)".to_owned());
            self.remove_and_destroy(sb, "guest not ready").await;
            return Err(SandboxError::GuestNotReady {
                id: id.clone(),
                addr: sb.guest.addr(),
                waited: started.elapsed(),
                last_error,
                output,
            });
        }
        Ok(())
    }

    /// Takes over sandboxes a previous agent left running: a new generation,
    /// a new channel, the creation time and deadline the previous agent kept
    /// (the default timeout from now if it kept none). A running one whose
    /// guest does not answer is kept, reported unhealthy and probed again
    /// until it answers: a guest slow to answer (a loaded host, a sandbox
    /// busy at the moment of the restart) is no reason to destroy work.
    pub async fn adopt(self: &Arc<Self>, handles: Vec<SandboxHandle>) -> Vec<SandboxId> {
        let mut adopted = Vec::new();
        for h in handles {
            if super::pool::is_pooled(&h) {
                info!(sandbox_id = %h.id, "destroying a pooled sandbox a previous agent left");
                if let Err(e) = self.runtime.destroy(&h.id).await {
                    warn!(sandbox_id = %h.id, error = %crate::error::chain(&e), "destroying a left pooled sandbox");
                }
                continue;
            }
            let state = if h.paused {
                State::Paused
            } else {
                State::Running
            };
            let kept = match super::kept::load(&h.dir) {
                Ok(k) => k,
                Err(e) => {
                    let timeout = self.cfg.limits.default_timeout_secs;
                    warn!(sandbox_id = %h.id, error = %e, timeout_secs = timeout, "no deadline kept for an adopted sandbox; giving it the default timeout");
                    let now = std::time::SystemTime::now();
                    super::kept::Kept::new(now, now + Duration::from_secs(timeout.into()), timeout)
                }
            };
            let sb = Arc::new(Sandbox::restored(
                &h,
                spec::to_proto(&h.spec, kept.timeout_secs),
                self.next_generation(),
                state,
                kept,
                self.shutdown.child_token(),
            ));
            sb.keep();
            if state == State::Running {
                let probe = sb
                    .guest
                    .wait_ready(
                        self.cfg.guest_poll_interval,
                        self.cfg.guest_ready_timeout.min(ADOPT_PROBE),
                    )
                    .await;
                if let Err(e) = probe {
                    if self.runtime.alive(&h.id) == Some(false) {
                        // Nothing to wait for: the reaper destroys it.
                        warn!(sandbox_id = %h.id, error = %e, "adopted sandbox's guest exited");
                        sb.set_unhealthy(Some(format!("its guest agent exited: {e}")));
                    } else {
                        warn!(sandbox_id = %h.id, error = %e, "adopted sandbox's guest does not answer; keeping it and probing again");
                        sb.set_unhealthy(Some(e));
                        self.spawn_health_retry(sb.clone());
                    }
                }
            }
            info!(sandbox_id = %h.id, address = %h.address, generation = sb.generation, "adopted sandbox");
            adopted.push(h.id.clone());
            self.admission
                .adopt(&h.id, h.spec.memory_mb.into(), h.spec.disk_mb.into());
            self.insert(sb, Kind::Created);
        }
        self.reaper_wake.notify_one();
        adopted
    }

    /// Probes an unhealthy sandbox's guest with backoff until it answers (then
    /// clears the mark and announces it running) or the sandbox goes.
    fn spawn_health_retry(self: &Arc<Self>, sb: Arc<Sandbox>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            loop {
                tokio::select! {
                    _ = sb.cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                match sb.guest.probe().await {
                    Ok(()) => break,
                    Err(e) => sb.set_unhealthy(Some(e)),
                }
                let Some(this) = this.upgrade() else { return };
                if this.runtime.alive(&sb.id) == Some(false) {
                    // Its guest is gone for good: the reaper destroys it.
                    this.reaper_wake.notify_one();
                    return;
                }
                wait = (wait * 2).min(HEALTH_RETRY_MAX);
            }
            let Some(this) = this.upgrade() else { return };
            if sb.cancel.is_cancelled() {
                return;
            }
            sb.set_unhealthy(None);
            info!(sandbox_id = %sb.id, "adopted sandbox's guest answers again");
            this.announce(&sb, Kind::Running);
        });
    }
}

/// How long an adopted sandbox's guest may take to answer before it is
/// reported unhealthy (and probed again in the background).
const ADOPT_PROBE: Duration = Duration::from_secs(5);
/// Longest wait between two probes of an unhealthy guest.
const HEALTH_RETRY_MAX: Duration = Duration::from_secs(30);

/// An id reserved for a create in progress.
struct IdReservation<'a> {
    manager: &'a Manager,
    id: SandboxId,
}

impl<'a> IdReservation<'a> {
    fn take(manager: &'a Manager, id: &SandboxId) -> Result<Self, SandboxError> {
        *manager.last_create.lock() = tokio::time::Instant::now();
        let mut creating = manager.creating.lock();
        if manager.sandboxes.contains_key(id) || !creating.insert(id.clone()) {
            return Err(SandboxError::AlreadyExists(id.clone()));
        }
        Ok(IdReservation {
            manager,
            id: id.clone(),
        })
    }
}

impl Drop for IdReservation<'_> {
    fn drop(&mut self) {
        self.manager.creating.lock().remove(&self.id);
        *self.manager.last_create.lock() = tokio::time::Instant::now();
    }
}
