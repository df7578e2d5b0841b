//! Watching a sandbox's first process: a pidfd becomes readable when the
//! process exits, whether or not this process is its parent (an adopted
//! sandbox's init was started by a previous agent).

use std::io;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::sync::watch;

/// A running first process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: Pid,
    exited: watch::Receiver<bool>,
}

impl Proc {
    /// Starts watching `pid`. `reap`: this process is its parent and must
    /// collect its exit status.
    pub fn watch(pid: Pid, reap: bool, id: &str) -> io::Result<Proc> {
        let fd = crate::sys::pidfd_open(pid)?;
        let (tx, rx) = watch::channel(false);
        let afd = crate::sys::readable(fd)?;
        let id = id.to_owned();
        tokio::spawn(async move {
            let _ = afd.readable().await;
            if reap {
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(status) => tracing::debug!(sandbox_id = %id, ?status, "sandbox init exited"),
                    Err(e) => tracing::debug!(sandbox_id = %id, error = %e, "reaping sandbox init"),
                }
            }
            let _ = tx.send(true);
        });
        Ok(Proc { pid, exited: rx })
    }

    pub fn has_exited(&self) -> bool {
        *self.exited.borrow()
    }

    pub fn kill(&self) {
        let _ = kill(self.pid, Signal::SIGKILL);
    }

    /// Waits until the process is gone; false on timeout.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.exited.clone();
        tokio::time::timeout(timeout, rx.wait_for(|e| *e))
            .await
            .is_ok()
    }
}
