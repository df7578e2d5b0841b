//! The one and only reaper of child processes.
//!
//! # Design
//! As PID 1 (and as a child subreaper otherwise) the agent inherits every orphan in
//! the sandbox, and someone must `wait` for them or they stay zombies forever. A
//! `waitpid(-1)` loop, however, also takes the exit status of our own children
//! away from anyone waiting for them by pid (`std`/`tokio` `Child::wait`). So there
//! is exactly one waiter: on every `SIGCHLD` the reaper runs `waitpid(-1, WNOHANG)`
//! until nothing is left, hands the status of a child we started to whoever
//! registered for it, and drops the status of an orphan.
//!
//! A child can exit before its pid is registered. [`Reaper::spawn`] therefore holds
//! the waiter lock from before `fork` until the pid is registered, and the reaper
//! holds the same lock around its `waitpid` loop: a status is never collected
//! while a spawn is in flight. This also keeps `std::process::Command::spawn`'s own
//! `waitpid` on an `exec` failure from racing with the reaper.
//!
//! # Limitations
//! Nothing else in the agent may wait for children (no `tokio::process`). Spawns
//! are serialized; each holds the lock for one `fork` + `exec` hand-shake.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited by itself with this code.
    Exited(i32),
    /// Killed by this signal number; `core` when it dumped core.
    Signaled { signal: i32, core: bool },
}

/// Why the reaper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("installing the SIGCHLD handler")]
    Signal(#[source] io::Error),
}

type Waiters = HashMap<i32, oneshot::Sender<ExitStatus>>;

/// Collects every exited child; see the module docs.
#[derive(Debug)]
pub struct Reaper {
    waiters: Mutex<Waiters>,
}

impl Reaper {
    /// Installs the `SIGCHLD` handler and starts the reaping task. Must run inside
    /// a tokio runtime, before any child is started.
    pub fn start() -> Result<Arc<Self>, ReaperError> {
        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
        let reaper = Arc::new(Self {
            waiters: Mutex::new(HashMap::new()),
        });
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                // Children that exited before the handler was installed are
                // collected on the first pass.
                task.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// A reaper that never reaps: for unit tests of code that only needs the
    /// type, so that a test binary never runs two `waitpid(-1)` loops.
    #[cfg(test)]
    pub fn idle() -> Arc<Self> {
        Arc::new(Self {
            waiters: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a child with `start`, which returns its pid and anything else, and
    /// registers for its exit status. No status is collected while this runs.
    pub fn spawn<T>(
        &self,
        start: impl FnOnce() -> io::Result<(u32, T)>,
    ) -> io::Result<(u32, T, oneshot::Receiver<ExitStatus>)> {
        let mut waiters = self.lock();
        let (pid, value) = start()?;
        let (tx, rx) = oneshot::channel();
        let pid_raw = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        waiters.insert(pid_raw, tx);
        Ok((pid, value, rx))
    }

    /// True while any child (ours or an adopted orphan) is still running or
    /// unreaped.
    pub fn has_children(&self) -> bool {
        let _waiters = self.lock();
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reap_all(&self) {
        let mut waiters = self.lock();
        loop {
            let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, core)) => (
                    pid,
                    ExitStatus::Signaled {
                        signal: signal as i32,
                        core,
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(other) => {
                    tracing::debug!(?other, "ignoring child state change");
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::warn!(%errno, "waitpid(-1) failed");
                    return;
                }
            };
            match waiters.remove(&pid.as_raw()) {
                // The receiver may be gone; the status is then simply dropped.
                Some(tx) => drop(tx.send(status)),
                None => tracing::debug!(pid = pid.as_raw(), ?status, "reaped orphan"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    // The test binary is not PID 1 and runs other tests in parallel threads that
    // never start children, so a reaper here only sees the children below.
    #[tokio::test]
    async fn statuses_reach_their_waiters_and_orphans_are_reaped() {
        let reaper = Reaper::start().unwrap();
        let start = |script: &str| {
            let script = script.to_owned();
            reaper
                .spawn(move || {
                    let child = Command::new("/bin/sh").args(["-c", &script]).spawn()?;
                    Ok((child.id(), ()))
                })
                .unwrap()
        };
        let (_, (), ok) = start("exit 0");
        let (_, (), three) = start("exit 3");
        let (pid, (), killed) = start("sleep 30");
        nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL).unwrap();
        assert_eq!(ok.await.unwrap(), ExitStatus::Exited(0));
        assert_eq!(three.await.unwrap(), ExitStatus::Exited(3));
        assert_eq!(
            killed.await.unwrap(),
            ExitStatus::Signaled {
                signal: 9,
                core: false
            }
        );
        // An exec failure is reported by `spawn` itself, without a panic in std's
        // own wait.
        let err = reaper
            .spawn(|| {
                // runs: -; a path that does not exist, on purpose
                Command::new("/nonexistent/program")
                    .spawn()
                    .map(|c| (c.id(), ()))
            })
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // A child started outside `spawn` is reaped silently; poll until gone.
        #[expect(
            clippy::zombie_processes,
            reason = "the reaper under test must reap it"
        )]
        let stray = Command::new("/bin/true").spawn().unwrap();
        let stray = stray.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{stray}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {stray} was never reaped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!reaper.has_children());
    }
}
