//! Follows each host agent's `WatchSandboxes` stream so that records change
//! as soon as the host changes (a TTL expiry, an agent shutting down) rather
//! than at the reconciler's next pass.
//!
//! # Design
//!
//! One task per host keeps a watch open, reconnecting with backoff (100 ms
//! doubling to 30 s) when the stream breaks. Of the events it applies only
//! what needs no guessing: `DESTROYED` marks a live record stopped ("expired"
//! when its expiry has passed, else "destroyed on host"), and `PAUSED`,
//! `RESUMED` and `RUNNING` update a live record's state and address. The
//! snapshot, `CREATED` and sandboxes without a record are left to the
//! reconciler, which owns adoption. Sandboxes with a lifecycle call in flight
//! are skipped: that call records its own outcome (with the better reason).
//!
//! # Limitations
//!
//! - An agent without `WatchSandboxes` (UNIMPLEMENTED) is not watched; the
//!   reconciler alone keeps its records.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wrenn_proto::wrenn::v1::{SandboxEvent, WatchSandboxesRequest, sandbox_event::Kind};
use wrenn_types::SandboxId;

use crate::hosts::Host;
use crate::service::convert::live_from_agent;
use crate::state::ControlState;
use crate::store::{StoreError, now_ms};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Watches `host` until `cancel`.
pub(crate) async fn watch_host(
    state: Arc<ControlState>,
    host: Arc<Host>,
    cancel: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut client = host.client();
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = client.watch_sandboxes(WatchSandboxesRequest {}) => r,
        };
        match opened {
            Ok(resp) => {
                tracing::debug!(host_id = %host.id(), "watching host");
                backoff = FIRST_BACKOFF;
                let mut events = resp.into_inner();
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = events.message() => next,
                    };
                    match next {
                        Ok(Some(ev)) => {
                            if let Err(e) = apply(&state, &host, ev).await {
                                tracing::warn!(host_id = %host.id(), error = %crate::error::Chain(&e), "cannot apply a host event");
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(host_id = %host.id(), code = ?status.code(), message = status.message(), "host watch ended");
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(host_id = %host.id(), "host agent has no WatchSandboxes; relying on the reconciler");
                return;
            }
            Err(status) => {
                tracing::debug!(host_id = %host.id(), code = ?status.code(), message = status.message(), "cannot watch host");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies one event to the store (see the module docs for which).
async fn apply(state: &ControlState, host: &Host, ev: SandboxEvent) -> Result<(), StoreError> {
    let kind = ev.kind();
    if !matches!(
        kind,
        Kind::Destroyed | Kind::Paused | Kind::Resumed | Kind::Running
    ) {
        return Ok(());
    }
    let Some(sb) = ev.sandbox else { return Ok(()) };
    let Ok(id) = sb.id.parse::<SandboxId>() else {
        return Ok(());
    };
    if state.busy.contains(&id) {
        return Ok(());
    }
    let Some(rec) = state.store.get_sandbox(&id).await? else {
        return Ok(());
    };
    if rec.state.is_stopped() || rec.host_id != host.id() {
        return Ok(());
    }
    let live = live_from_agent(&sb);
    let now = now_ms();
    if kind == Kind::Destroyed {
        let expires = live.expires_at.or(rec.expires_at);
        let reason = if expires.is_some_and(|t| t <= now) {
            format!(
                "expired: its timeout ran out and host {} destroyed it",
                host.id()
            )
        } else {
            format!("destroyed on host {}", host.id())
        };
        if state.store.mark_stopped(&id, &reason, now).await? {
            tracing::info!(sandbox_id = %id, host_id = %host.id(), %reason, "record marked stopped");
        }
    } else if !rec.matches(&live) {
        state.store.update_live(&id, &live, now).await?;
    }
    Ok(())
}
