//! Stopping: on `SIGTERM` (or `SIGINT`) the agent stops serving, sends `SIGTERM`
//! to every process group it started (as PID 1: to every process), waits up to
//! [`GRACE`] for them to exit, `SIGKILL`s what is left and exits 0.

use std::io;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use crate::process::ProcessTable;
use crate::reaper::Reaper;

/// How long processes get to exit after `SIGTERM`.
pub const GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the reaper after `SIGKILL`.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// The signals that stop the agent.
#[derive(Debug)]
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves with the name of the first stop signal received.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Stops every process; see the module docs.
pub async fn stop_processes(table: &ProcessTable, reaper: &Reaper, pid1: bool) {
    for (sig, wait) in [(Signal::SIGTERM, GRACE), (Signal::SIGKILL, KILL_WAIT)] {
        let targets = signal_all(table, sig, pid1);
        if targets == 0 {
            return;
        }
        tracing::info!(signal = sig.as_str(), targets, "stopping processes");
        let done = async {
            if pid1 {
                while reaper.has_children() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } else {
                for proc in table.running() {
                    proc.wait_end().await;
                }
            }
        };
        if tokio::time::timeout(wait, done).await.is_ok() {
            return;
        }
    }
    tracing::warn!("some processes survived SIGKILL");
}

/// Sends `sig`; returns how many targets (groups, or "everything" as PID 1).
fn signal_all(table: &ProcessTable, sig: Signal, pid1: bool) -> usize {
    let running = table.running();
    if pid1 {
        // -1: every process we may signal except ourselves. Only as PID 1, where
        // "every process" is the sandbox.
        return match kill(Pid::from_raw(-1), sig) {
            Ok(()) => running.len().max(1),
            Err(_) => 0, // ESRCH: nothing else is running.
        };
    }
    for proc in &running {
        if let Err(errno) = proc.kill(sig) {
            tracing::debug!(pid = proc.pid, %errno, "signalling process group");
        }
    }
    running.len()
}
