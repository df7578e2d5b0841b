//! Shared harness of the in-process tests: a real agent (tonic server on an
//! ephemeral loopback port) over [`FakeRuntime`] (real guest processes), and
//! a real gRPC client.
#![allow(dead_code)]

pub mod fake_runtime;
pub mod host;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use wrenn_agent::{Agent, AgentConfig};
use wrenn_proto::process as pp;
use wrenn_proto::wrenn::v1::{self as pb, host_agent_client::HostAgentClient};

#[allow(unused_imports)]
pub use fake_runtime::{FakeRuntime, GuestMode};

pub type Client = HostAgentClient<wrenn_proto::auth::AuthChannel>;

/// The static guest binary; a missing one fails the test with the command
/// that builds it.
pub fn guest_bin() -> PathBuf {
    wrenn_agent::guest_bin::resolve(None).unwrap_or_else(|e| panic!("{e}"))
}

pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (PID and mount namespaces for the guest processes)"
    );
}

/// A running agent and a client to it. Shut down explicitly to check the
/// shutdown; dropping it kills what is left (the runtime's children die with
/// it and the directory is removed).
pub struct Harness {
    pub agent: Option<Agent>,
    pub runtime: Arc<FakeRuntime>,
    pub client: Client,
    pub config: AgentConfig,
    pub dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> AgentConfig {
    let mut c = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.to_owned(),
        host_id: "test-host".into(),
        reserve_memory_mb: 0,
        reserve_disk_mb: 0,
        guest_ready_timeout_ms: 10_000,
        shutdown_timeout_secs: 20,
        ..Default::default()
    };
    c.runtime.prefix = "wrenn-ta".into();
    c.runtime.slot_first = 2000;
    c.runtime.slot_last = 2999;
    c
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut AgentConfig)) -> Harness {
        assert_root();
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let runtime = FakeRuntime::new(guest_bin(), dir.path());
        let mut config = test_config(dir.path());
        adjust(&mut config);
        Self::start_over(runtime, config, dir).await
    }

    /// An agent over an existing runtime (adoption tests).
    pub async fn start_over(
        runtime: Arc<FakeRuntime>,
        config: AgentConfig,
        dir: tempfile::TempDir,
    ) -> Harness {
        let agent = Agent::start_with_runtime(&config, runtime.clone())
            .await
            .expect("agent starts");
        let client = connect(agent.local_addr(), &agent_key(&config)).await;
        Harness {
            agent: Some(agent),
            runtime,
            client,
            config,
            dir,
        }
    }

    pub async fn create(&mut self) -> pb::Sandbox {
        self.create_spec(pb::SandboxSpec::default()).await
    }

    pub async fn create_spec(&mut self, spec: pb::SandboxSpec) -> pb::Sandbox {
        self.client
            .create_sandbox(pb::CreateSandboxRequest {
                sandbox_id: String::new(),
                spec: Some(spec),
            })
            .await
            .expect("create")
            .into_inner()
    }

    /// Shuts the agent down; unless it keeps sandboxes, asserts that every
    /// sandbox process it ever had is gone.
    pub async fn shutdown(&mut self) {
        self.agent
            .take()
            .expect("running")
            .shutdown()
            .await
            .expect("clean shutdown");
        if !self.config.keep_sandboxes_on_shutdown {
            assert_eq!(self.runtime.count(), 0, "sandboxes left in the runtime");
            let rt = self.runtime.clone();
            eventually(
                Duration::from_secs(10),
                "every sandbox process gone",
                || rt.live_pids().is_empty(),
            )
            .await;
        }
    }

    /// Runs `cmd args…` with Exec and returns the response.
    pub async fn exec(&mut self, id: &str, cmd: &str, args: &[&str]) -> pb::ExecResponse {
        self.client
            .exec(exec_req(id, start(cmd, args)))
            .await
            .expect("exec")
            .into_inner()
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A client of the agent at `addr` presenting `key` (see [`agent_key`]).
pub async fn connect(addr: std::net::SocketAddr, key: &str) -> Client {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the agent");
    let ch = wrenn_proto::auth::with_bearer(ch, wrenn_proto::auth::Bearer::new(key).unwrap());
    HostAgentClient::new(ch).max_decoding_message_size(64 << 20)
}

/// The key the agent of `config` made at its first start.
pub fn agent_key(config: &AgentConfig) -> String {
    wrenn_proto::auth::load_key(&config.key_path()).expect("the agent's key")
}

pub fn start(cmd: &str, args: &[&str]) -> pp::StartRequest {
    pp::StartRequest {
        process: Some(pp::ProcessConfig {
            cmd: cmd.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn exec_req(id: &str, start: pp::StartRequest) -> pb::ExecRequest {
    pb::ExecRequest {
        sandbox_id: id.into(),
        start: Some(start),
        ..Default::default()
    }
}

pub fn sh(id: &str, script: &str) -> pb::ExecRequest {
    exec_req(id, start("sh", &["-c", script]))
}

/// Polls `cond` every 10 ms for up to `within`.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// Next message of a stream within `within`.
pub async fn next<T>(
    s: &mut (impl futures::Stream<Item = Result<T, tonic::Status>> + Unpin),
    within: Duration,
) -> Option<Result<T, tonic::Status>> {
    tokio::time::timeout(within, s.next())
        .await
        .expect("stream message in time")
}
