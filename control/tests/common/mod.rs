//! Shared by the integration test binaries.
#![allow(dead_code, unused_imports)]

pub mod pg;

use std::future::Future;
use std::time::Duration;

use wrenn_control::client::Client;
use wrenn_control::{Control, Options};

pub use wrenn_proto::fake_agent::{self, FakeAgent};

/// A control plane on an ephemeral loopback port with SQLite in a temporary
/// `$WRENN_DIR`, talking to one host agent.
pub struct TestControl {
    pub control: Control,
    pub dir: tempfile::TempDir,
    pub key: String,
}

impl TestControl {
    pub async fn start(agent_url: &str) -> TestControl {
        Self::start_with(agent_url, |o| o).await
    }

    /// Like `start`, with the options adjusted by `tweak`. The periodic
    /// reconciler is set to an hour so tests drive passes themselves.
    pub async fn start_with(
        agent_url: &str,
        tweak: impl FnOnce(Options) -> Options,
    ) -> TestControl {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(dir.path())
            .with_listen("127.0.0.1:0".parse().unwrap())
            .with_agent(agent_url);
        opts.reconcile_interval = Duration::from_secs(3600);
        let control = wrenn_control::start(tweak(opts))
            .await
            .expect("control plane starts");
        assert_eq!(
            control.admin_key_created(),
            Some(dir.path().join("admin.key").as_path())
        );
        let key = wrenn_control::client::read_admin_key(dir.path()).unwrap();
        // The periodic reconciler's first pass runs right after start; let it
        // finish so that tests which change the host see only their own passes.
        let passes = || {
            let n = control.reconcile_passes();
            async move { n >= 1 }
        };
        eventually(Duration::from_secs(30), "the first reconcile pass", passes).await;
        TestControl { control, dir, key }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.control.url(), &self.key)
            .await
            .expect("client connects")
    }

    /// Shuts down and checks that the listener is closed.
    pub async fn stop(self) {
        let addr = self.control.local_addr();
        self.control.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.control.wait())
            .await
            .expect("control plane stops within 30 s")
            .expect("control plane stops cleanly");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener still open after shutdown"
        );
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
