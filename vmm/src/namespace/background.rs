//! Work a sandbox operation leaves running after it returns (deleting a
//! retired directory), counted so that shutdown can wait for it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default, Clone)]
pub struct Background {
    inner: Arc<(AtomicUsize, Notify)>,
}

impl Background {
    /// Spawns `task` on the current tokio runtime and counts it until it ends.
    pub fn run(&self, task: impl Future<Output = ()> + Send + 'static) {
        let inner = self.inner.clone();
        inner.0.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            task.await;
            if inner.0.fetch_sub(1, Ordering::SeqCst) == 1 {
                inner.1.notify_waiters();
            }
        });
    }

    pub fn pending(&self) -> usize {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Waits until nothing is pending; false on timeout.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.1.notified();
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pending() == 0;
            }
        }
    }
}
