//! Running a command to its end within a time limit and keeping the tail of
//! its output, outside the process table: the template's READY check.
//!
//! The command starts like any process ([`spawn`]: its own session, the
//! user's ids, the single reaper) and its output is read by the same pumps,
//! so it drains the same way after the exit. On overrun its process group
//! gets `SIGKILL`; so does it when the caller stops waiting (the future is
//! dropped before the exit).

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use wrenn_proto::process::process_event::{EndEvent, Event, data_event};

use super::output::{Fanout, Output, pump};
use super::request::{SpawnError, SpawnSpec};
use super::spawn::{Io, spawn};
use crate::reaper::Reaper;
use crate::wire::end_event;

/// How long to wait for the reaper after the `SIGKILL` of an overrun.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// How a bounded run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub end: EndEvent,
    /// Set when the run was killed for taking longer than its limit.
    pub killed_after: Option<Duration>,
    /// The last bytes of stdout and stderr, interleaved as they were read.
    pub output: Vec<u8>,
}

impl Finished {
    /// Exited by itself with status 0.
    pub fn passed(&self) -> bool {
        self.killed_after.is_none() && self.end.exited && self.end.exit_code == 0
    }
}

/// Runs `spec` until it ends or `limit` has passed (then kills its group),
/// keeping the last `keep` bytes of its output.
pub async fn run_bounded(
    spec: &SpawnSpec,
    reaper: &Reaper,
    limit: Duration,
    keep: usize,
) -> Result<Finished, SpawnError> {
    let spawned = spawn(spec, reaper)?;
    let pid = spawned.pid;
    let mut guard = KillOnDrop(Some(pid));
    let fanout = Arc::new(Fanout::default());
    let mut events = fanout.subscribe(pid);
    let (exited_tx, exited) = watch::channel(false);
    let pumps = match spawned.io {
        Io::Pipes { stdout, stderr, .. } => vec![
            tokio::spawn(pump(stdout, Output::Stdout, fanout.clone(), exited.clone())),
            tokio::spawn(pump(stderr, Output::Stderr, fanout.clone(), exited)),
        ],
        Io::Pty(pty) => vec![tokio::spawn(pump(pty, Output::Pty, fanout.clone(), exited))],
    };
    let collect = async move {
        let mut tail = Vec::new();
        while let Some(event) = events.recv().await {
            if let Some(Event::Data(data)) = event.event
                && let Some(
                    data_event::Output::Stdout(bytes)
                    | data_event::Output::Stderr(bytes)
                    | data_event::Output::Pty(bytes),
                ) = data.output
            {
                tail.extend_from_slice(&bytes);
                let extra = tail.len().saturating_sub(keep);
                tail.drain(..extra);
            }
        }
        tail
    };
    let mut exit = spawned.exit;
    let wait = async {
        let (status, killed_after) = match tokio::time::timeout(limit, &mut exit).await {
            Ok(status) => (Some(status), None),
            Err(_) => {
                kill_group(pid);
                let status = tokio::time::timeout(KILL_WAIT, &mut exit).await;
                (status.ok(), Some(limit))
            }
        };
        if status.is_some() {
            // Reaped (or the reaper is gone): the pid may be reused now.
            guard.0 = None;
        }
        let status = status.and_then(Result::ok);
        exited_tx.send_replace(true);
        for pump in pumps {
            let _ = pump.await;
        }
        // The pumps are done: dropping the last fan-out ends `collect`.
        drop(fanout);
        (status, killed_after)
    };
    let (output, (status, killed_after)) = tokio::join!(collect, wait);
    let end = status.map(end_event).unwrap_or_else(|| EndEvent {
        exit_code: -1,
        exited: false,
        status: "unknown".into(),
        error: Some("the exit status was lost".into()),
    });
    Ok(Finished {
        end,
        killed_after,
        output,
    })
}

/// `SIGKILL` to the process group `pid` leads, or to `pid` alone.
fn kill_group(pid: u32) {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let pid = pid as i32;
    if kill(Pid::from_raw(-pid), Signal::SIGKILL).is_err() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Kills the group of a run that was not reaped (its caller gave up).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
        }
    }
}
