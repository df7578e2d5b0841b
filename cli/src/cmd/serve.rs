//! `wrenn agent`, `wrenn control` and `wrenn proxy`: thin wrappers around the
//! libraries, plus configuration.
//!
//! Configuration precedence, lowest first: built-in defaults, the `--config`
//! file (TOML, the library's own serde struct, unknown keys refused), the
//! environment, flags. `--print-config` prints the result as JSON and exits;
//! a test checks that a flag, the file and the environment give the same
//! configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use wrenn_agent::AgentConfig;
use wrenn_proxy::ProxyConfig;

fn load_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

fn print_json<T: serde::Serialize>(c: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(c)?);
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("wrenn {what} needs root (namespaces, cgroups, mounts, netlink): run it with sudo");
    }
    Ok(())
}

// ---------------------------------------------------------------- agent

#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// TOML file with `AgentConfig` fields.
    #[arg(long, env = "WRENN_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7801].
    #[arg(long, env = "WRENN_AGENT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// State directory [default: /var/lib/wrenn].
    #[arg(long, env = "WRENN_DIR")]
    pub dir: Option<PathBuf>,
    /// Timeout of sandboxes created without one, in seconds [default: 300].
    #[arg(long, env = "WRENN_DEFAULT_TIMEOUT")]
    pub default_timeout: Option<u32>,
    /// Leave sandboxes running on shutdown (the next start adopts them).
    #[arg(long, env = "WRENN_KEEP_SANDBOXES")]
    pub keep_sandboxes: Option<bool>,
    /// Prefix of host-global names (netns, cgroups, nftables table) [default: wrenn].
    #[arg(long, env = "WRENN_PREFIX")]
    pub prefix: Option<String>,
    /// Network slots this agent may use, FIRST-LAST [default: 1-65534].
    #[arg(long, env = "WRENN_SLOTS", value_parser = parse_slots)]
    pub slots: Option<(u16, u16)>,
    /// The static wrenn-guest binary [default: searched].
    #[arg(long, env = "WRENN_GUEST_BIN")]
    pub guest_bin: Option<PathBuf>,
    /// Sandboxes of the default shape kept ready for creates [default: 0].
    #[arg(long, env = "WRENN_POOL_SIZE")]
    pub pool_size: Option<u32>,
    /// Print the resulting configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Serve nothing: destroy every sandbox an earlier agent with this
    /// configuration left running, then exit.
    #[arg(long)]
    pub destroy_leftovers: bool,
}

fn parse_slots(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("expected FIRST-LAST within 1-65534, got {s:?}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a == 0 || b > 65534 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn agent_config(a: &AgentArgs) -> Result<AgentConfig> {
    let mut c: AgentConfig = load_file(a.config.as_deref())?;
    if let Some(v) = a.listen {
        c.listen = v;
    }
    if let Some(v) = &a.dir {
        c.dir = v.clone();
    }
    if let Some(v) = a.default_timeout {
        c.default_timeout_secs = v;
    }
    if let Some(v) = a.keep_sandboxes {
        c.keep_sandboxes_on_shutdown = v;
    }
    if let Some(v) = &a.prefix {
        c.runtime.prefix = v.clone();
    }
    if let Some((first, last)) = a.slots {
        c.runtime.slot_first = first;
        c.runtime.slot_last = last;
    }
    if let Some(v) = &a.guest_bin {
        c.runtime.guest_bin = Some(v.clone());
    }
    if let Some(v) = a.pool_size {
        c.pool_size = v;
    }
    Ok(c)
}

pub async fn agent(a: AgentArgs) -> Result<()> {
    let config = agent_config(&a)?;
    if a.print_config {
        return print_json(&config);
    }
    require_root("agent")?;
    crate::logging::init("agent", Some(&config.dir))?;
    if a.destroy_leftovers {
        let gone = wrenn_agent::destroy_leftovers(config)
            .await
            .context("destroying left-over sandboxes")?;
        tracing::info!(count = gone.len(), ids = ?gone, "destroyed left-over sandboxes");
        eprintln!("destroyed {} left-over sandbox(es)", gone.len());
        return Ok(());
    }
    wrenn_agent::run(config, stop_signal())
        .await
        .context("host agent")?;
    Ok(())
}

// ---------------------------------------------------------------- proxy

#[derive(Args, Clone, Debug)]
pub struct ProxyArgs {
    /// TOML file with `ProxyConfig` fields.
    #[arg(long, env = "WRENN_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address browsers connect to [default: 127.0.0.1:7880].
    #[arg(long, env = "WRENN_PROXY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin listener for /metrics [default: 127.0.0.1:7881].
    #[arg(long, env = "WRENN_PROXY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Domain of subdomain URLs `<port>-<id>.<domain>` [default: localhost].
    #[arg(long, env = "WRENN_PROXY_DOMAIN")]
    pub domain: Option<String>,
    /// Host agent whose sandboxes are routed [default: http://127.0.0.1:7801].
    #[arg(long, env = "WRENN_AGENT")]
    pub agent: Option<String>,
    /// Worker threads; 0 = one per core [default: 0].
    #[arg(long, env = "WRENN_PROXY_THREADS")]
    pub threads: Option<usize>,
    /// Seconds in-flight requests get to finish on shutdown [default: 10].
    #[arg(long, env = "WRENN_PROXY_GRACE_PERIOD")]
    pub grace_period: Option<u64>,
    /// State directory, for the log file and the agent key [default: /var/lib/wrenn].
    #[arg(long, env = "WRENN_DIR")]
    pub dir: Option<PathBuf>,
    /// The key the host agent requires [default: $WRENN_DIR/agent.key].
    #[arg(long, env = "WRENN_AGENT_KEY_FILE")]
    pub agent_key_file: Option<PathBuf>,
    /// Print the resulting configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
}

pub fn proxy_config(a: &ProxyArgs) -> Result<ProxyConfig> {
    let mut c: ProxyConfig = load_file(a.config.as_deref())?;
    if let Some(v) = a.listen {
        c.listen = v;
    }
    if let Some(v) = a.admin_listen {
        c.admin_listen = Some(v);
    }
    if let Some(v) = &a.domain {
        c.domain = v.clone();
    }
    if let Some(v) = &a.agent {
        c.agent = v.clone();
    }
    if let Some(v) = a.threads {
        c.threads = v;
    }
    if let Some(v) = a.grace_period {
        c.grace_period_secs = v;
    }
    c.validate()?;
    Ok(c)
}

/// Blocking: Pingora runs on the proxy's own runtime and threads.
pub fn proxy(a: ProxyArgs) -> Result<()> {
    let config = proxy_config(&a)?;
    if a.print_config {
        return print_json(&config);
    }
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::client::DEFAULT_DIR));
    crate::logging::init("proxy", Some(&dir))?;
    let mut config = config;
    config.agent_key =
        wrenn_proto::auth::Secret::new(agent_key(a.agent_key_file.as_deref(), &dir)?);
    let report = wrenn_proxy::run(config, stop_signal()).context("proxy")?;
    tracing::info!(?report, "proxy stopped");
    Ok(())
}

// ---------------------------------------------------------------- control

#[derive(Args, Clone, Debug)]
pub struct ControlArgs {
    /// gRPC (and HTTP) listen address [default: 127.0.0.1:7800].
    #[arg(long, env = "WRENN_CONTROL_LISTEN", default_value = wrenn_control::options::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// State directory: admin key, SQLite store [default: /var/lib/wrenn].
    #[arg(long, env = "WRENN_DIR", default_value = crate::client::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Store: postgres://… for PostgreSQL [default: SQLite at $WRENN_DIR/wrenn.db].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The host agent [default: http://127.0.0.1:7801].
    #[arg(long, env = "WRENN_AGENT", default_value = wrenn_control::options::DEFAULT_AGENT_ADDRESS)]
    pub agent: String,
    /// The host's proxy, as reported by `Hosts.List`.
    #[arg(long, env = "WRENN_PROXY_URL")]
    pub proxy_url: Option<String>,
    /// Seconds between two reconciliations of the store with the agents.
    #[arg(long, env = "WRENN_RECONCILE_INTERVAL", default_value_t = 30)]
    pub reconcile_interval: u64,
    /// The key the host agent requires [default: $WRENN_DIR/agent.key].
    #[arg(long, env = "WRENN_AGENT_KEY_FILE")]
    pub agent_key_file: Option<PathBuf>,
}

/// The host agent's key: `file`, or `agent.key` in `dir`, created there (a
/// random key, `0600`) if no agent has made it yet.
fn agent_key(file: Option<&std::path::Path>, dir: &std::path::Path) -> Result<String> {
    let path = file.map_or_else(
        || dir.join(wrenn_agent::AgentConfig::KEY_FILE),
        ToOwned::to_owned,
    );
    let key = match file {
        Some(_) => wrenn_proto::auth::load_key(&path),
        None => wrenn_proto::auth::load_or_create_key(&path),
    };
    key.with_context(|| format!("the host agent's key {}", path.display()))
}

pub async fn control(a: ControlArgs) -> Result<()> {
    crate::logging::init("control", Some(&a.dir))?;
    let mut options = wrenn_control::Options::new(&a.dir)
        .with_listen(a.listen)
        .with_agent(a.agent.clone())
        .with_agent_key(agent_key(a.agent_key_file.as_deref(), &a.dir)?)
        .with_shutdown(stop_signal());
    if let Some(url) = a.database_url.filter(|u| !u.trim().is_empty()) {
        options = options.with_store(wrenn_control::StoreConfig::Url(url));
    }
    if let Some(p) = a.proxy_url {
        for h in &mut options.hosts {
            h.proxy_address = p.clone();
        }
    }
    options.reconcile_interval = Duration::from_secs(a.reconcile_interval.max(1));
    wrenn_control::run(options).await.context("control plane")?;
    Ok(())
}

// ---------------------------------------------------------------- images

/// Builds the `base` template before the agent starts, with a progress bar,
/// so a first `wrenn up` shows what it is doing (about a minute; cached under
/// `/var/cache/wrenn` afterwards).
pub async fn prepare_base_image(dir: &Path) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    use wrenn_vmm::image::{BuildStep, build_base};

    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("building the base template {bar:40} {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut shown = false;
        let result = build_base(&dir, &mut |p| {
            if p.step == BuildStep::Cached && p.fraction >= 1.0 {
                return;
            }
            shown = true;
            bar.set_position((p.fraction.clamp(0.0, 1.0) * 1000.0) as u64);
            bar.set_message(p.message.clone());
        });
        if shown {
            bar.finish_and_clear();
        }
        result
    })
    .await
    .context("base template builder")?
    .context("build the base template")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_parse_and_validate() {
        assert_eq!(parse_slots("10-20").unwrap(), (10, 20));
        for bad in ["0-5", "5-4", "1-65535", "x", "5"] {
            assert!(
                parse_slots(bad).unwrap_err().contains("FIRST-LAST"),
                "{bad}"
            );
        }
    }
}
