//! A `Runtime` for in-process tests: every sandbox is a real `wrenn-guest`
//! process serving on a loopback port it picks itself (`--listen 127.0.0.1:0
//! --print-addr`), run as PID 1 of its own PID and mount namespace (`unshare
//! --pid --fork --kill-child --mount-proc`), so killing it ends every process
//! the sandbox started. The guest starts at `create` (its address must be in
//! the handle); `start` only checks. No network namespace, no rootfs:
//! the guest sees the host's filesystem, and each sandbox gets a directory as
//! its working directory.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::{Child, Command};
use wrenn_vmm::{
    Backend, Error, Recovered, Result, Runtime, SandboxHandle, SandboxId, SandboxMetrics,
    SandboxSpec,
};

/// What `start` runs.
#[derive(Debug, Clone)]
pub enum GuestMode {
    /// The real guest agent.
    Real,
    /// A shell script that never serves (for readiness failures).
    Broken(String),
}

struct FakeSandbox {
    handle: SandboxHandle,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Broken mode: the port the guest "listens" on, held so nobody else
    /// takes it; it accepts connections and never answers.
    _silent: Option<std::net::TcpListener>,
}

pub struct FakeRuntime {
    guest_bin: PathBuf,
    root: PathBuf,
    mode: Mutex<GuestMode>,
    sandboxes: Mutex<HashMap<SandboxId, FakeSandbox>>,
    next_slot: AtomicU16,
    /// What the next `recover` reports as adopted.
    pub to_adopt: Mutex<Vec<SandboxHandle>>,
    pub destroys: AtomicUsize,
    pub shutdowns: AtomicUsize,
    /// Host pids of every sandbox process ever started.
    spawned: Mutex<Vec<u32>>,
}

impl FakeRuntime {
    pub fn new(guest_bin: PathBuf, root: &Path) -> Arc<Self> {
        Arc::new(FakeRuntime {
            guest_bin,
            root: root.to_owned(),
            mode: Mutex::new(GuestMode::Real),
            sandboxes: Mutex::new(HashMap::new()),
            next_slot: AtomicU16::new(2000),
            to_adopt: Mutex::new(Vec::new()),
            destroys: AtomicUsize::new(0),
            shutdowns: AtomicUsize::new(0),
            spawned: Mutex::new(Vec::new()),
        })
    }

    pub fn set_mode(&self, mode: GuestMode) {
        *self.mode.lock() = mode;
    }

    /// Host pid of the `unshare` process holding sandbox `id`.
    pub fn pid(&self, id: &str) -> Option<u32> {
        let id: SandboxId = id.parse().ok()?;
        self.sandboxes.lock().get(&id)?.child.as_ref()?.id()
    }

    /// Host pid of the guest agent itself (the child of `unshare`).
    pub fn guest_pid(&self, id: &str) -> Option<i32> {
        let outer = self.pid(id)?;
        let children =
            std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    pub fn count(&self) -> usize {
        self.sandboxes.lock().len()
    }

    /// Pids of sandbox processes still alive.
    pub fn live_pids(&self) -> Vec<u32> {
        self.spawned
            .lock()
            .iter()
            .copied()
            .filter(|&p| super::pid_alive(p as i32))
            .collect()
    }

    fn spawn(&self, spec: &SandboxSpec, dir: &Path) -> std::io::Result<Child> {
        // If the test process dies, `unshare` gets SIGKILL, and with it
        // (--kill-child) the sandbox's PID 1 and every process under it.
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "unshare"]);
        cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"]);
        match &*self.mode.lock() {
            GuestMode::Real => {
                cmd.arg(&self.guest_bin)
                    .args([
                        "--listen",
                        "127.0.0.1:0",
                        "--print-addr",
                        "--keepalive-secs",
                        "1",
                        "--token-file",
                    ])
                    .arg(dir.join(TOKEN_FILE));
            }
            GuestMode::Broken(script) => {
                cmd.args(["sh", "-c", script]);
            }
        }
        cmd.envs(spec.guest_env())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    }
}

/// The guest's token file in its sandbox directory.
const TOKEN_FILE: &str = "token";

fn step(
    step: &'static str,
    id: &SandboxId,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Step {
        step,
        context: id.to_string(),
        source: Box::new(e),
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn alive(&self, id: &SandboxId) -> Option<bool> {
        let mut sandboxes = self.sandboxes.lock();
        let child = sandboxes.get_mut(id)?.child.as_mut()?;
        Some(matches!(child.try_wait(), Ok(None)))
    }

    fn backend(&self) -> Backend {
        Backend::Namespace
    }

    /// Starts the guest right away (it picks its own port and prints it),
    /// so the handle carries an address nobody else can have taken.
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        if spec.template != SandboxSpec::DEFAULT_TEMPLATE {
            return Err(Error::UnknownTemplate {
                path: self.root.join("images").join(&spec.template),
                template: spec.template,
            });
        }
        if self.sandboxes.lock().contains_key(&spec.id) {
            return Err(Error::AlreadyExists(spec.id));
        }
        let id = spec.id.clone();
        let dir = self.root.join("sandboxes").join(id.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| step("create sandbox dir", &id, e))?;
        // The guest requires a token, as in a real sandbox.
        let token = format!("fake-token-{id}");
        std::fs::write(dir.join(TOKEN_FILE), &token).map_err(|e| step("write token", &id, e))?;
        let mut child = self
            .spawn(&spec, &dir)
            .map_err(|e| step("spawn guest", &id, e))?;
        self.spawned.lock().extend(child.id());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped");
        let buf = stderr.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                buf.lock().extend_from_slice(&chunk[..n]);
            }
        });
        let broken = matches!(*self.mode.lock(), GuestMode::Broken(_));
        let (guest_addr, silent) = if broken {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| step("bind", &id, e))?;
            (l.local_addr().map_err(|e| step("bind", &id, e))?, Some(l))
        } else {
            let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line)).await;
            let addr = match read {
                Ok(Ok(_)) => line.trim().parse::<SocketAddr>().ok(),
                _ => None,
            };
            // Keep the pipe open (and drained) for the guest's lifetime.
            tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::sink()).await });
            match addr {
                Some(a) => (a, None),
                None => {
                    let _ = child.kill().await;
                    let _ = std::fs::remove_dir_all(&dir);
                    let msg = format!("guest printed {line:?} instead of its address");
                    return Err(step("read guest address", &id, std::io::Error::other(msg)));
                }
            }
        };
        let handle = SandboxHandle {
            id: id.clone(),
            backend: Backend::Namespace,
            slot: self.next_slot.fetch_add(1, Ordering::Relaxed),
            address: Ipv4Addr::LOCALHOST,
            guest_addr,
            dir,
            spec,
            paused: false,
            netns: None,
            guest_token: token,
        };
        self.sandboxes.lock().insert(
            id,
            FakeSandbox {
                handle: handle.clone(),
                child: Some(child),
                stderr,
                _silent: silent,
            },
        );
        Ok(handle)
    }

    async fn start(&self, id: &SandboxId) -> Result<()> {
        match self.sandboxes.lock().get(id) {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(id.clone())),
        }
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.signal_guest(id, Signal::SIGSTOP)?;
        self.sandboxes
            .lock()
            .get_mut(id)
            .expect("checked")
            .handle
            .paused = true;
        Ok(())
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.signal_guest(id, Signal::SIGCONT)?;
        self.sandboxes
            .lock()
            .get_mut(id)
            .expect("checked")
            .handle
            .paused = false;
        Ok(())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.destroys.fetch_add(1, Ordering::Relaxed);
        let sb = self.sandboxes.lock().remove(id);
        let Some(mut sb) = sb else { return Ok(()) };
        if let Some(mut child) = sb.child.take() {
            // --kill-child: the guest (PID 1 of its namespace) and with it
            // every process of the sandbox die with `unshare`.
            let _ = child.kill().await;
        }
        std::fs::remove_dir_all(&sb.handle.dir).map_err(|e| step("remove sandbox dir", id, e))?;
        Ok(())
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        let map = self.sandboxes.lock();
        let sb = map.get(id).ok_or_else(|| Error::NotFound(id.clone()))?;
        Ok(SandboxMetrics {
            memory_limit_bytes: u64::from(sb.handle.spec.memory_mb) << 20,
            disk_limit_bytes: u64::from(sb.handle.spec.disk_mb) << 20,
            pids: 1,
            ..Default::default()
        })
    }

    fn list(&self) -> Vec<SandboxHandle> {
        self.sandboxes
            .lock()
            .values()
            .map(|s| s.handle.clone())
            .collect()
    }

    fn guest_output(&self, id: &SandboxId, max: usize) -> Option<String> {
        let map = self.sandboxes.lock();
        let buf = map.get(id)?.stderr.lock();
        let from = buf.len().saturating_sub(max);
        Some(String::from_utf8_lossy(&buf[from..]).into_owned())
    }

    async fn recover(&self) -> Result<Recovered> {
        Ok(Recovered {
            adopted: std::mem::take(&mut *self.to_adopt.lock()),
            cleaned: Vec::new(),
        })
    }

    async fn shutdown(&self, _timeout: Duration) -> Result<()> {
        self.shutdowns.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl FakeRuntime {
    fn signal_guest(&self, id: &SandboxId, sig: Signal) -> Result<()> {
        let pid = self
            .guest_pid(id.as_str())
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        kill(Pid::from_raw(pid), sig).map_err(|e| step("signal guest", id, e))
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        // Children are `kill_on_drop`; directories go with the test's tempdir.
        self.sandboxes.lock().clear();
    }
}
