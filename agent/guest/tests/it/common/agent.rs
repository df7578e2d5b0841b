//! The agent as a child process on `127.0.0.1:0`.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use wrenn_proto::filesystem::filesystem_client::FilesystemClient;
use wrenn_proto::process::process_client::ProcessClient;

use super::events::{run, sh};

pub const PATIENCE: Duration = Duration::from_secs(30);

/// The agent binary built for this test run (glibc, dynamically linked).
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wrenn-guest"))
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (CI runs them as root)"
    );
}

/// A running agent; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Agent {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub channel: Channel,
    /// Its stderr so far, when started with [`AgentBuilder::capture_stderr`].
    stderr: Option<Arc<Mutex<String>>>,
}

/// How to start an agent.
pub struct AgentBuilder {
    /// Stderr is a pipe whose read end is closed at once (a console nobody
    /// drains, as while the host agent restarts).
    broken_stderr: bool,
    /// Stderr is read into [`Agent::stderr`].
    capture_stderr: bool,
    log_level: String,
    command: Command,
}

impl AgentBuilder {
    pub fn arg(mut self, arg: &str) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    pub fn broken_stderr(mut self) -> Self {
        self.broken_stderr = true;
        self
    }

    pub fn capture_stderr(mut self) -> Self {
        self.capture_stderr = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub async fn start(mut self) -> Agent {
        require_root();
        let stderr = if self.broken_stderr || self.capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = self
            .command
            .args(["--log-level", &self.log_level])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting wrenn-guest");
        let stderr = child.stderr.take();
        let captured = match stderr {
            Some(stderr) if self.capture_stderr => {
                let log = Arc::new(Mutex::new(String::new()));
                let sink = log.clone();
                std::thread::spawn(move || {
                    let mut lines = std::io::BufReader::new(stderr);
                    let mut line = String::new();
                    while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                        sink.lock().unwrap().push_str(&line);
                        line.clear();
                    }
                });
                Some(log)
            }
            // Closed at once: a console nobody drains.
            _ => None,
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(PATIENCE)
            .expect("wrenn-guest did not print its address");
        let addr: SocketAddr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad address line {line:?}"));
        let channel = connect(addr).await;
        Agent {
            child: Some(child),
            addr,
            channel,
            stderr: captured,
        }
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connecting to wrenn-guest")
}

impl Agent {
    /// `wrenn-guest --listen 127.0.0.1:0 --print-addr --log-level warn`.
    pub fn builder() -> AgentBuilder {
        Self::builder_for(&agent_bin(), &[])
    }

    /// Runs `prefix... <bin> <flags>` (e.g. through `unshare` and `chroot`).
    pub fn builder_for(bin: &Path, prefix: &[&str]) -> AgentBuilder {
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                // runs: unshare chroot; the prefix the lifecycle tests pass
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin), // runs: -; the guest agent built here
        };
        command.args(["--listen", "127.0.0.1:0", "--print-addr"]);
        AgentBuilder {
            broken_stderr: false,
            capture_stderr: false,
            // WRENN_TEST_GUEST_LOG=debug shows the agent's logs while debugging a test.
            log_level: std::env::var("WRENN_TEST_GUEST_LOG").unwrap_or_else(|_| "warn".into()),
            command,
        }
    }

    pub async fn start() -> Agent {
        Self::builder().start().await
    }

    pub fn process(&self) -> ProcessClient<Channel> {
        ProcessClient::new(self.channel.clone())
    }

    pub fn fs(&self) -> FilesystemClient<Channel> {
        FilesystemClient::new(self.channel.clone())
    }

    /// What the agent wrote to stderr so far (its logs); needs
    /// [`AgentBuilder::capture_stderr`].
    pub fn stderr(&self) -> String {
        let log = self
            .stderr
            .as_ref()
            .expect("start the agent with capture_stderr()");
        log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The agent still answers health checks and runs commands.
    pub async fn assert_serving(&self) {
        let mut health = HealthClient::new(self.channel.clone());
        for service in ["", "process.Process", "filesystem.Filesystem"] {
            let reply = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health of {service:?}: {e}"));
            assert_eq!(
                reply.into_inner().status(),
                ServingStatus::Serving,
                "service {service:?}"
            );
        }
        let out = run(self, sh("echo alive")).await;
        assert_eq!(out.stdout, b"alive\n");
    }

    /// Waits for an exit that something else caused.
    pub fn terminate_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        wait_child(&mut child, PATIENCE).expect("wrenn-guest did not exit")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        wait_child(&mut child, PATIENCE).expect("wrenn-guest did not exit after SIGTERM")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` every 10 ms until true; panics with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
