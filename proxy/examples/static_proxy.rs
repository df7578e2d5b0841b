//! The proxy with a fixed route table and no agent, for benchmarks and manual
//! runs before `wrenn proxy` exists:
//!
//! ```sh
//! cargo run --release -p wrenn-proxy --example static_proxy -- \
//!     --listen 127.0.0.1:7880 --threads 2 --route bench=127.0.0.1 [--no-access-log]
//! curl http://127.0.0.1:7880/proxy/bench/8000/
//! ```
//! Ctrl-C (SIGINT) or SIGTERM stops it gracefully.

use std::sync::Arc;

use anyhow::{Context, bail};
use wrenn_proxy::{Proxy, ProxyConfig, Route, RouteOptions, RouteState, RouteTable};

// Pingora allocates per request; glibc malloc shows up at ~15% of the proxy's
// CPU under load, mimalloc at a fraction of that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut config = ProxyConfig::default();
    let mut routes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => config.listen = value()?.parse().context("--listen")?,
            "--admin" => config.admin_listen = Some(value()?.parse().context("--admin")?),
            "--threads" => config.threads = value()?.parse().context("--threads")?,
            "--domain" => config.domain = value()?,
            "--no-access-log" => config.access_log = false,
            "--route" => {
                let v = value()?;
                let (id, ip) = v
                    .split_once('=')
                    .with_context(|| format!("--route {v}: expected <id>=<ip>"))?;
                routes.push(Route::new(
                    id.parse()?,
                    RouteState::Running,
                    Some(ip.parse().with_context(|| format!("--route {v}: bad IP"))?),
                    1,
                    RouteOptions::default(),
                ));
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let table = Arc::new(RouteTable::new());
    table.replace_all(routes);
    let proxy = Proxy::new(config).static_routes(table).start()?;
    eprintln!("listening on {}", proxy.listen_addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    let report = proxy.shutdown();
    eprintln!("stopped: {report:?}");
    Ok(())
}
