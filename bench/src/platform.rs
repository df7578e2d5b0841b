//! The real platform for a scenario: `wrenn up` as a child process in a
//! throwaway state directory, with the bench's prefix and slots, and a
//! control-plane client authenticated with the admin key it wrote.
//!
//! Stopping (or dropping) a [`Platform`] sends SIGINT to `wrenn up`, which
//! stops its components in order and destroys every sandbox; then the state
//! directory is removed. `wrenn up`'s output goes to `<dir>/up.log`, whose
//! tail is printed when start-up fails.

use std::ffi::OsString;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;
use tonic::transport::Endpoint;
use wrenn_control::client::{AuthedChannel, Bearer, bearer};
use wrenn_proto::wrenn::v1::sandboxes_client::SandboxesClient;

use crate::paths;

/// The bench's share of host-global names (docs/DEVELOPING.md).
pub const PREFIX: &str = "wrenn-tb";
/// Slots for the platform scenarios unless `WRENN_BENCH_SLOTS` says
/// otherwise (the runtime scenario uses 5000–6999; both never run at once
/// in `scripts/test`, but engineers on one machine might).
pub const DEFAULT_SLOTS: &str = "6500-6999";

/// The slot range: `WRENN_BENCH_SLOTS` or [`DEFAULT_SLOTS`], as FIRST-LAST.
pub fn slot_range() -> anyhow::Result<(u16, u16)> {
    let s = std::env::var("WRENN_BENCH_SLOTS").unwrap_or_else(|_| DEFAULT_SLOTS.to_owned());
    let parsed = s
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .filter(|(a, b)| *a >= 5000 && b >= a && *b <= 6999);
    parsed.with_context(|| {
        format!("WRENN_BENCH_SLOTS={s:?}: expected FIRST-LAST within the bench's 5000-6999")
    })
}
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The control plane's `Sandboxes` API, with the admin key on every call.
pub type Client = SandboxesClient<AuthedChannel>;

/// A running `wrenn up`.
pub struct Platform {
    child: Option<Child>,
    pub dir: PathBuf,
    pub control: SocketAddr,
    pub proxy: SocketAddr,
    pub proxy_admin: SocketAddr,
    /// The host agent's gRPC address (also its `/metrics`, with its key).
    pub agent: SocketAddr,
    /// What `wrenn up` got in its environment besides the bench's own; its
    /// components (the proxy among them) inherit it.
    pub env: Vec<(String, OsString)>,
    slots: (u16, u16),
    auth: Bearer,
}

impl Platform {
    /// Starts `wrenn up` and waits until its proxy accepts connections.
    pub async fn start(scenario: &str) -> anyhow::Result<Self> {
        Self::start_with(scenario, &[]).await
    }

    /// [`Platform::start`] with more environment for `wrenn up` and its
    /// components (e.g. `WRENN_AGENT_CONFIG`).
    pub async fn start_with(scenario: &str, env: &[(&str, PathBuf)]) -> anyhow::Result<Self> {
        Self::start_beside(scenario, env, PREFIX, slot_range()?).await
    }

    /// [`Platform::start_with`] with a prefix and slots of its own, so that
    /// two platforms can run side by side (each with a part of
    /// [`slot_range`] and a prefix starting with [`PREFIX`]).
    pub async fn start_beside(
        scenario: &str,
        env: &[(&str, PathBuf)],
        prefix: &str,
        slots: (u16, u16),
    ) -> anyhow::Result<Self> {
        crate::require_root(scenario)?;
        let wrenn = paths::wrenn_bin()?;
        let guest = paths::guest_bin()?;
        let dir = paths::scratch_dir(scenario)?;
        let [control, agent, proxy, proxy_admin] = free_ports::<4>()?;
        let log = std::fs::File::create(dir.join("up.log"))?;
        // The proxy keeps as many keep-alive connections per upstream as
        // nginx's `keepalive 1024` in conf/bench/nginx.conf (wrenn's
        // default, 256, would close the rest at 1024 clients), and as many
        // idle ones in all: nginx's `keepalive` counts per worker, wrenn's
        // `pool_size` for the whole proxy.
        let proxy_config = dir.join("proxy.toml");
        std::fs::write(
            &proxy_config,
            format!(
                "upstream_max_in_flight = 1024\npool_size = {}\n",
                1024 * crate::cores()
            ),
        )?;
        let env: Vec<(String, OsString)> = [
            ("WRENN_PREFIX", prefix.into()),
            ("WRENN_SLOTS", format!("{}-{}", slots.0, slots.1).into()),
            ("WRENN_GUEST_BIN", guest.into_os_string()),
            ("WRENN_PROXY_CONFIG", proxy_config.into_os_string()),
            // wrenn's default; WRENN_BENCH_LOG_LEVEL measures other settings
            // (e.g. `info,wrenn_proxy::access=off`: the access log's cost).
            (
                "LOG_LEVEL",
                std::env::var("WRENN_BENCH_LOG_LEVEL")
                    .unwrap_or_else(|_| "info".into())
                    .into(),
            ),
        ]
        .into_iter()
        .chain(env.iter().map(|(k, v)| (*k, v.clone().into_os_string())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // runs: -; the wrenn binary built here
        let child = Command::new(&wrenn)
            .arg("up")
            .arg("--dir")
            .arg(&dir)
            .args(["--control-listen", &control.to_string()])
            .args(["--agent-listen", &agent.to_string()])
            .args(["--proxy-listen", &proxy.to_string()])
            .args(["--proxy-admin", &proxy_admin.to_string()])
            .args(["--stop-timeout", "20"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} up", wrenn.display()))?;
        let mut p = Platform {
            child: Some(child),
            dir,
            control,
            proxy,
            proxy_admin,
            agent,
            env,
            slots,
            auth: Bearer::none(),
        };
        if let Err(e) = p.wait_ready().await {
            let tail = p.log_tail(4000);
            return Err(e.context(format!(
                "wrenn up did not start; its log ends with:\n{tail}"
            )));
        }
        Ok(p)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("wrenn up exited: {status}");
            }
            let key = std::fs::read_to_string(self.dir.join("admin.key")).unwrap_or_default();
            if !key.trim().is_empty() && tokio::net::TcpStream::connect(self.proxy).await.is_ok() {
                self.auth = bearer(&key)?;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not ready within {} s", START_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many sandboxes the slot range holds.
    pub fn slot_count(&self) -> usize {
        usize::from(self.slots.1 - self.slots.0) + 1
    }

    /// A new HTTP/2 connection to the control plane.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let channel = Endpoint::from_shared(format!("http://{}", self.control))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connecting to the control plane")?;
        Ok(
            SandboxesClient::with_interceptor(channel, self.auth.clone())
                .max_decoding_message_size(64 << 20),
        )
    }

    /// A metric of the proxy's admin listener.
    pub async fn proxy_metric(&self, name: &str) -> anyhow::Result<f64> {
        metric(self.proxy_admin, name).await
    }

    /// The key the host agent requires, which `wrenn up`'s agent wrote.
    pub fn agent_key_file(&self) -> PathBuf {
        self.dir.join("agent.key")
    }

    /// The host agent's `/metrics` text (it asks for the agent key).
    pub async fn agent_metrics(&self) -> anyhow::Result<String> {
        let key =
            std::fs::read_to_string(self.agent_key_file()).context("reading the agent key")?;
        metrics_text(self.agent, Some(key.trim())).await
    }

    /// The pid of `wrenn up`'s proxy process.
    pub fn proxy_pid(&self) -> anyhow::Result<i32> {
        let up = self.child.as_ref().context("wrenn up is not running")?.id() as i32;
        crate::procstat::child_with_arg(up, "proxy")
            .context("the proxy process of wrenn up was not found")
    }

    /// The last `max` bytes of `wrenn up`'s output.
    pub fn log_tail(&self, max: u64) -> String {
        let mut out = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("up.log")) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
            let _ = f.read_to_string(&mut out);
        }
        out
    }

    /// Stops `wrenn up` (every sandbox is destroyed) and removes the directory.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let stopping = Instant::now();
        let status = crate::procstat::stop(&mut child, Signal::SIGINT, STOP_TIMEOUT);
        let tail = self.log_tail(2000);
        println!(
            "wrenn up stopped in {:.1} s",
            stopping.elapsed().as_secs_f64()
        );
        if std::env::var_os("WRENN_BENCH_KEEP").is_some() {
            println!("kept {} (WRENN_BENCH_KEEP)", self.dir.display());
        } else {
            remove_dir(&self.dir);
        }
        crate::procstat::stopped("wrenn up", status, STOP_TIMEOUT, || tail)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("wrenn-bench: {e:#}");
        }
    }
}

/// Removes a scratch directory, unmounting nothing: `wrenn up` has already
/// released everything under it.
fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("wrenn-bench: removing {}: {e}", dir.display());
    }
}

/// The value of `name` (with its labels, as exposed) on a Prometheus
/// endpoint at `admin`/metrics.
pub async fn metric(admin: SocketAddr, name: &str) -> anyhow::Result<f64> {
    metrics_text(admin, None)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no {name} in {admin}/metrics"))
}

/// The whole `GET /metrics` answer of `addr` (head and body), presenting
/// `bearer` when given; an error unless it is `200`.
async fn metrics_text(addr: SocketAddr, bearer: Option<&str>) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    // The proxy's admin listener answers 421 to a Host that is not its own.
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 200"),
        "{addr}/metrics answered: {}",
        text.lines().next().unwrap_or("nothing")
    );
    Ok(text)
}

/// `N` loopback addresses with ports free right now.
pub fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    Ok(addrs.try_into().expect("N addresses"))
}
