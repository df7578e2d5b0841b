//! A fake host agent for tests and benchmarks (feature `test-support`): a
//! real tonic `wrenn.v1.HostAgent` server on loopback whose behaviour a test
//! scripts through its [`FakeState`].
//!
//! # What it serves
//!
//! Every `HostAgent` method, with sandboxes kept in a map
//! ([`FakeState::sandboxes`]) and each call recorded as a string
//! ([`FakeState::calls`], e.g. `"create <id>"`, `"pty closed <id>"`):
//!
//! - Lifecycle: create (reports [`SANDBOX_ADDRESS`], a new generation each
//!   time; fails once with [`FakeState::fail_create`] when set), destroy,
//!   pause, resume (generation + 1), set-timeout, list, metrics.
//! - `WatchSandboxes`: the snapshot (`EXISTING` per sandbox), `SYNCED`, then
//!   live events, with none lost between the snapshot and the subscription.
//!   Each stream has an unbounded queue, so a slow watcher is never dropped.
//! - Processes: exec echoes `cmd args…` on stdout and `stderr` on stderr
//!   (`exit N` exits N); exec-stream sends `args[0]` (default 3) numbered
//!   lines; the PTY echoes input, reports resizes as text and ends on a
//!   signal; background processes, kill and input are recorded.
//! - Files: `/big` ([`BIG_CHUNKS`] chunks of [`CHUNK`] bytes, made on demand,
//!   each starting with its index), `/broken` (three chunks, then an error),
//!   uploads whose end is kept in [`FakeState::writes`] as a
//!   [`WriteOutcome`]; stat, list, mkdir, move and remove answer plausibly.
//!
//! # Scripting it
//!
//! [`FakeAgent::start`] serves on `127.0.0.1:0`; [`FakeAgent::url`] is the
//! address to give the code under test. `FakeAgent` derefs to its
//! [`FakeState`], so a test calls, on the agent:
//!
//! - [`emit`](FakeState::emit) to change a sandbox and tell watchers, or
//!   [`publish`](FakeState::publish) to tell them only;
//!   [`set_quietly`](FakeState::set_quietly) and
//!   [`remove_quietly`](FakeState::remove_quietly) to change the map without
//!   an event; [`expire`](FakeState::expire) for the host's TTL reaper;
//! - [`drop_streams`](FakeState::drop_streams) to break every open watch,
//!   [`break_snapshots`](FakeState::break_snapshots) to make new ones fail
//!   before `SYNCED`;
//! - [`calls`](FakeState::calls), [`watch_calls`](FakeState::watch_calls),
//!   [`watchers`](FakeState::watchers) and [`len`](FakeState::len) to see
//!   what happened.
//!
//! [`FakeAgent::stop`] shuts it down gracefully; [`FakeAgent::start_on`]
//! serves the same state again (on the same port, say). Dropping a
//! `FakeAgent` ends its watch streams and stops its server.

mod files;
mod process;
mod service;
mod state;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

use crate::wrenn::v1::host_agent_server::HostAgentServer;
pub use files::{BIG_CHUNKS, CHUNK};
pub use state::{FakeState, WriteOutcome, sandbox};

/// Address the fake reports for the sandboxes it creates: inside the control
/// suite's slot range (3000-3999), never contacted.
pub const SANDBOX_ADDRESS: &str = "10.210.23.113";

/// The running fake; derefs to its [`FakeState`].
pub struct FakeAgent {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeAgent {
    /// Serves a fresh state on an ephemeral loopback port.
    ///
    /// # Panics
    ///
    /// When 127.0.0.1:0 cannot be bound.
    pub async fn start() -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake agent to 127.0.0.1:0");
        Self::start_on(listener, Arc::default()).await
    }

    /// Serves `state` on `listener` (used to restart on the same port).
    ///
    /// # Panics
    ///
    /// When the listener has no local address.
    pub async fn start_on(listener: TcpListener, state: Arc<FakeState>) -> FakeAgent {
        let addr = listener.local_addr().expect("the listener's address");
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = HostAgentServer::new(service::Fake {
            state: state.clone(),
        });
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("the fake agent serves");
        });
        FakeAgent {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits until the port is closed (at most 10 s, then
    /// the server is aborted).
    pub async fn stop(&mut self) {
        self.shut_down();
        if let Some(mut t) = self.task.take() {
            // Graceful: open connections get GOAWAY and close, so the agent
            // is really gone, not just no longer accepting.
            if tokio::time::timeout(Duration::from_secs(10), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
    }

    /// Ends the watch streams (they would hold their connections open
    /// through a graceful shutdown) and starts the shutdown, once.
    fn shut_down(&mut self) {
        if let Some(s) = self.stop.take() {
            self.state.end_streams("fake agent stopped");
            let _ = s.send(());
        }
    }
}

impl Deref for FakeAgent {
    type Target = FakeState;

    fn deref(&self) -> &FakeState {
        &self.state
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        // The server finishes its shutdown in the background.
        self.shut_down();
    }
}
