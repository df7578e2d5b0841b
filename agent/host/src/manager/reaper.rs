//! The TTL reaper: destroys sandboxes whose deadline passed, and sandboxes
//! lost because their first process (the guest agent, or the VMM) exited —
//! killed from inside, by the OOM killer, or by hand — so a dead sandbox
//! never stays listed as running until its deadline.
//!
//! It sleeps until the earliest deadline (at most [`IDLE_WAKE`]) and is woken
//! early when a create or SetTimeout may have moved a deadline. Sandboxes
//! still starting are skipped until they run (a create is never cut short;
//! a deadline that passed meanwhile is acted on right after).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Manager, REAP_RETRY, State};

/// Longest sleep between two scans when nothing is due: how late a lost
/// sandbox may be noticed.
const IDLE_WAKE: Duration = Duration::from_secs(5);

/// Why a sandbox is destroyed by the reaper.
#[derive(Clone, Copy)]
enum Why {
    Timeout,
    Lost,
}

pub(super) async fn run(m: Arc<Manager>) {
    let stop = m.shutdown.clone();
    loop {
        let now = Instant::now();
        let mut next = now + IDLE_WAKE;
        let mut expired = Vec::new();
        for e in m.sandboxes.iter() {
            let sb = e.value();
            if sb.state() == State::Starting {
                continue;
            }
            let d = sb.deadline();
            if d <= now {
                expired.push((sb.clone(), Why::Timeout));
            } else if m.runtime.alive(&sb.id) == Some(false) {
                expired.push((sb.clone(), Why::Lost));
            } else {
                next = next.min(d);
            }
        }
        let reaps = expired.iter().map(|(sb, why)| {
            let m = m.clone();
            async move {
                let reason = match why {
                    // SetTimeout may have raced with the scan.
                    Why::Timeout if sb.deadline() > Instant::now() => return,
                    Why::Timeout => {
                        info!(sandbox_id = %sb.id, "sandbox timed out");
                        "timeout"
                    }
                    Why::Lost => {
                        warn!(sandbox_id = %sb.id, "sandbox lost: its guest agent exited; destroying it");
                        "lost: its guest agent exited"
                    }
                };
                if let Err(e) = m.destroy_sandbox(sb, reason).await {
                    warn!(sandbox_id = %sb.id, error = %crate::error::chain(&e),
                          retry_in_s = REAP_RETRY.as_secs(), reason, "reaper's destroy failed");
                    sb.postpone(REAP_RETRY);
                }
            }
        });
        // Not cut short by shutdown: a destroy is finished, never abandoned.
        futures::future::join_all(reaps).await;
        if !expired.is_empty() {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            _ = m.reaper_wake.notified() => {}
        }
    }
}
