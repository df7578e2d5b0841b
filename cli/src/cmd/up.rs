//! `wrenn up` — the whole platform on one machine.
//!
//! Design: the host agent, the control plane and the proxy run as three child
//! processes of `wrenn up` (`wrenn agent`, `wrenn control`, `wrenn proxy`),
//! each with its own runtime, threads and sockets. Separate processes keep the
//! two traffic classes apart down to the scheduler and allocator — heavy proxy
//! load cannot stall a PTY relay — let each be measured on its own (the bench
//! reads the proxy's CPU time and RSS), and match how a production host runs
//! them (systemd units in `conf/systemd/`).
//!
//! Order: build the `base` template if missing (progress bar), start the
//! agent and wait for its gRPC health, then the control plane (health), then
//! the proxy (its port accepts). Ctrl-C or SIGTERM stops them in reverse
//! order, each with SIGTERM and a grace period; the agent destroys its
//! sandboxes on the way out, so nothing is left behind.
//!
//! Supervision: a component that dies (a crash, the OOM killer's SIGKILL) is
//! started again after a backoff (0.5 s, doubling to 10 s) and waited for as
//! at start; a restarted agent adopts the sandboxes it left. Only a component
//! that keeps dying — [`MAX_RESTARTS`] deaths within [`RESTART_WINDOW`] —
//! stops the platform, which then destroys its sandboxes as Ctrl-C does.
//!
//! Children get PR_SET_PDEATHSIG, so they also stop if `wrenn up` itself is
//! killed outright: the control plane and the proxy with SIGTERM, the agent
//! with SIGKILL — an agent told to stop destroys its sandboxes, and `wrenn
//! up` dying is no reason to lose them: the next start adopts them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::client::DEFAULT_DIR;

#[derive(Args, Clone)]
pub struct UpArgs {
    /// State directory: images, sandboxes, logs, database, admin key.
    #[arg(long, env = "WRENN_DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Control plane gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub control_listen: SocketAddr,
    /// Host agent gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:7801")]
    pub agent_listen: SocketAddr,
    /// Proxy listen address (browsers).
    #[arg(long, default_value = "127.0.0.1:7880")]
    pub proxy_listen: SocketAddr,
    /// Proxy admin listener (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:7881")]
    pub proxy_admin: SocketAddr,
    /// Domain for subdomain URLs: `<port>-<id>.<domain>`.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Keep sandboxes running when the agent stops (default: destroy them).
    #[arg(long)]
    pub keep_sandboxes: bool,
    /// Sandboxes of the default shape the agent keeps ready, so creates in
    /// bursts take milliseconds [default: the agent's, 0].
    #[arg(long, env = "WRENN_POOL_SIZE")]
    pub pool_size: Option<u32>,
    /// Seconds each component gets to stop before it is killed.
    #[arg(long, default_value_t = 30)]
    pub stop_timeout: u64,
}

struct Component {
    name: &'static str,
    child: Child,
    args: Vec<String>,
    /// When it died lately (restarts in the window).
    deaths: Vec<Instant>,
}

/// Deaths of one component within [`RESTART_WINDOW`] that stop the platform.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(120);
const RESTART_BACKOFF_FIRST: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn run(a: UpArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("wrenn up needs root (namespaces, cgroups, mounts, netlink): run it with sudo");
    }
    wrenn_proto::auth::private_dir(&a.dir)
        .with_context(|| format!("create {}", a.dir.display()))?;
    crate::logging::init("up", Some(&a.dir))?;
    super::serve::prepare_base_image(&a.dir).await?;

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut running: Vec<Component> = Vec::new();
    let started = start_all(&a, &mut running);
    let outcome = tokio::select! {
        r = started => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted while starting")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated while starting")),
    };
    if let Err(e) = outcome {
        stop_all(&mut running, a.stop_timeout).await;
        return Err(e);
    }
    banner(&a);

    let result = loop {
        let (i, status) = tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            exited = first_exit(&mut running) => exited,
        };
        let now = Instant::now();
        let c = &mut running[i];
        c.deaths.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        c.deaths.push(now);
        let deaths = c.deaths.len();
        if deaths > MAX_RESTARTS {
            break Err(anyhow::anyhow!(
                "{} keeps dying ({status}; {deaths} times in {} s); stopping the others — see {}/logs/{}.log",
                c.name,
                RESTART_WINDOW.as_secs(),
                a.dir.display(),
                c.name
            ));
        }
        let backoff =
            (RESTART_BACKOFF_FIRST * 2u32.pow(deaths as u32 - 1)).min(RESTART_BACKOFF_MAX);
        eprintln!(
            "{} exited unexpectedly ({status}); restarting it in {:.1} s ({deaths} of {MAX_RESTARTS} restarts)",
            c.name,
            backoff.as_secs_f64()
        );
        tracing::warn!(component = c.name, %status, deaths, backoff_ms = backoff.as_millis() as u64, "component died; restarting it");
        let restarted = tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            r = restart(&a, &mut running, i, backoff) => r,
        };
        if let Err(e) = restarted {
            tracing::warn!(error = %format!("{e:#}"), "restart failed");
            eprintln!("restart failed: {e:#}");
        }
    };
    eprintln!("\nstopping wrenn…");
    let gave_up = result.is_err();
    let agent_args = running.first().map(|c| c.args.clone());
    stop_all(&mut running, a.stop_timeout).await;
    // A platform that gives up stops as Ctrl-C does: if the agent was the
    // one that kept dying, nothing destroyed its sandboxes yet.
    if gave_up
        && !a.keep_sandboxes
        && let Some(mut args) = agent_args
    {
        args.push("--destroy-leftovers".into());
        let exe = std::env::current_exe().context("find the wrenn executable")?;
        // runs: -; this wrenn binary, as a one-shot agent
        let status = Command::new(&exe).args(&args).status().await;
        tracing::info!(?status, "destroyed the sandboxes left behind");
    }
    result
}

/// Starts component `i` again after `backoff` and waits until it serves. A
/// start that fails leaves a dead child behind, which the supervision loop
/// counts as one more death.
async fn restart(a: &UpArgs, running: &mut [Component], i: usize, backoff: Duration) -> Result<()> {
    tokio::time::sleep(backoff).await;
    let (name, args) = (running[i].name, running[i].args.clone());
    let fresh = spawn(name, &args)?;
    running[i].child = fresh.child;
    match name {
        "agent" => wait_grpc_health(&format!("http://{}", a.agent_listen), name, a, running).await,
        "control" => {
            wait_grpc_health(&format!("http://{}", a.control_listen), name, a, running).await
        }
        _ => wait_tcp(a.proxy_listen, name, a, running).await,
    }?;
    eprintln!("{name} is back");
    Ok(())
}

async fn start_all(a: &UpArgs, running: &mut Vec<Component>) -> Result<()> {
    let dir = a.dir.display().to_string();
    let mut agent_args = vec![
        "agent".to_owned(),
        "--listen".into(),
        a.agent_listen.to_string(),
        "--dir".into(),
        dir.clone(),
    ];
    if a.keep_sandboxes {
        agent_args.push("--keep-sandboxes".into());
    }
    if let Some(n) = a.pool_size {
        agent_args.extend(["--pool-size".to_owned(), n.to_string()]);
    }
    running.push(spawn("agent", &agent_args)?);
    wait_grpc_health(&format!("http://{}", a.agent_listen), "agent", a, running).await?;

    let control_args = vec![
        "control".to_owned(),
        "--listen".into(),
        a.control_listen.to_string(),
        "--dir".into(),
        dir.clone(),
        "--agent".into(),
        format!("http://{}", a.agent_listen),
        "--proxy-url".into(),
        format!("http://{}", a.proxy_listen),
    ];
    running.push(spawn("control", &control_args)?);
    wait_grpc_health(
        &format!("http://{}", a.control_listen),
        "control",
        a,
        running,
    )
    .await?;

    let proxy_args = vec![
        "proxy".to_owned(),
        "--listen".into(),
        a.proxy_listen.to_string(),
        "--admin-listen".into(),
        a.proxy_admin.to_string(),
        "--domain".into(),
        a.domain.clone(),
        "--agent".into(),
        format!("http://{}", a.agent_listen),
        "--dir".into(),
        dir,
    ];
    running.push(spawn("proxy", &proxy_args)?);
    wait_tcp(a.proxy_listen, "proxy", a, running).await?;
    Ok(())
}

fn spawn(name: &'static str, args: &[String]) -> Result<Component> {
    let exe = std::env::current_exe().context("find the wrenn executable")?;
    // The agent must not take `wrenn up`'s death as an order to destroy its
    // sandboxes (see the module docs).
    let death_signal = if name == "agent" {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    // runs: -; this wrenn binary, as a component
    let mut cmd = Command::new(&exe);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    // Own process group: Ctrl-C reaches `wrenn up` only, which stops the
    // components in order. PDEATHSIG stops them if `wrenn up` is killed.
    cmd.process_group(0);
    crate::sys::die_with_parent(&mut cmd, death_signal);
    let child = cmd
        .spawn()
        .with_context(|| format!("start {} {}", exe.display(), name))?;
    tracing::info!(component = name, pid = child.id(), "started");
    Ok(Component {
        name,
        child,
        args: args.to_vec(),
        deaths: Vec::new(),
    })
}

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Fails early when a component exits while we wait for it.
fn check_alive(a: &UpArgs, running: &mut [Component]) -> Result<()> {
    for c in running.iter_mut() {
        if let Some(status) = c.child.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); see the log above and {}/logs/{}.log",
                c.name,
                a.dir.display(),
                c.name
            );
        }
    }
    Ok(())
}

async fn wait_grpc_health(
    url: &str,
    name: &str,
    a: &UpArgs,
    running: &mut [Component],
) -> Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_millis(500));
    loop {
        check_alive(a, running)?;
        // Bounded: a foreign process on the port (the component itself
        // failed to bind it) accepts the connection and never answers.
        let attempt = async {
            let ch = endpoint.connect().await.ok()?;
            let req = HealthCheckRequest {
                service: String::new(),
            };
            let r = HealthClient::new(ch).check(req).await.ok()?;
            Some(r.into_inner().status == ServingStatus::Serving as i32)
        };
        if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not become healthy at {url} within {}s",
                READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_tcp(
    addr: SocketAddr,
    name: &str,
    a: &UpArgs,
    running: &mut [Component],
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        check_alive(a, running)?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not accept connections on {addr} within {}s",
                READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first component to exit: its index and status.
async fn first_exit(running: &mut [Component]) -> (usize, std::process::ExitStatus) {
    let waits = running.iter_mut().enumerate().map(|(i, c)| {
        Box::pin(async move {
            let status = c.child.wait().await;
            (i, status)
        })
    });
    let ((i, status), _, _) = futures::future::select_all(waits).await;
    match status {
        Ok(s) => (i, s),
        Err(_) => (i, std::os::unix::process::ExitStatusExt::from_raw(1 << 8)),
    }
}

/// SIGTERM in reverse start order, waiting up to `timeout` s each, then SIGKILL.
async fn stop_all(running: &mut Vec<Component>, timeout: u64) {
    while let Some(mut c) = running.pop() {
        if let Some(pid) = c.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(Duration::from_secs(timeout), c.child.wait()).await {
            Ok(Ok(status)) => tracing::info!(component = c.name, %status, "stopped"),
            _ => {
                tracing::warn!(
                    component = c.name,
                    timeout,
                    "did not stop in time; killing it"
                );
                let _ = c.child.kill().await;
            }
        }
    }
}

fn banner(a: &UpArgs) {
    let key = a.dir.join("admin.key");
    let p = a.proxy_listen.port();
    println!(
        "\nwrenn is up.\n\
         \n  control plane  http://{}   (admin key: {})\
         \n  host agent     http://{}\
         \n  proxy          http://{}   (metrics: http://{}/metrics)\
         \n  logs           {}/logs/\
         \n\nTry:\
         \n  id=$(wrenn sandbox create)\
         \n  wrenn exec $id -- python3 -c 'print(6*7)'\
         \n  wrenn pty $id\
         \n  wrenn exec -d --tag web $id -- python3 -m http.server 8000   # then open http://8000-$id.{}:{p}/\
         \n  wrenn sandbox rm $id\
         \n\nCtrl-C stops everything.\n",
        a.control_listen,
        key.display(),
        a.agent_listen,
        a.proxy_listen,
        a.proxy_admin,
        a.dir.display(),
        a.domain,
    );
}
