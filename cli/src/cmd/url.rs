//! `wrenn url <id> <port>` — both URL forms that reach a sandbox port.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use wrenn_proto::wrenn::v1::{ListHostsRequest, SandboxRef};
use wrenn_types::SandboxId;

use crate::client::GlobalArgs;

#[derive(Args)]
pub struct UrlArgs {
    id: String,
    /// Port the app listens on inside the sandbox (1-65535).
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The proxy's address as browsers reach it [default: the sandbox's host's
    /// proxy, as the control plane reports it].
    #[arg(long, env = "WRENN_PROXY_LISTEN")]
    proxy: Option<SocketAddr>,
    /// Domain of subdomain URLs.
    #[arg(long, env = "WRENN_PROXY_DOMAIN", default_value = wrenn_proxy::config::DEFAULT_DOMAIN)]
    domain: String,
    /// Print the URLs without asking the control plane (needs --proxy or the default proxy).
    #[arg(long)]
    offline: bool,
}

pub async fn run(g: &GlobalArgs, a: UrlArgs) -> Result<()> {
    let id: SandboxId = a.id.parse()?;
    let mut proxy = a.proxy;
    if !a.offline {
        let mut c = g.connect().await?;
        let sb = c
            .get(SandboxRef {
                sandbox_id: a.id.clone(),
            })
            .await
            .with_context(|| format!("look up sandbox {}", a.id))?
            .into_inner();
        let state = crate::json::state(sb.state);
        if state != "running" {
            eprintln!(
                "note: sandbox {} is {state}; the proxy answers 409/404 until it runs",
                a.id
            );
        }
        if proxy.is_none() {
            proxy = host_proxy(g, &sb.host_id).await?;
        }
    }
    let proxy = match proxy {
        Some(p) => p,
        None => wrenn_proxy::config::DEFAULT_LISTEN.parse()?,
    };
    let urls = wrenn_proxy::sandbox_urls(
        &a.domain,
        &wrenn_proxy::public_host(proxy),
        proxy.port(),
        &id,
        a.port,
    );
    println!("{}", urls.subdomain);
    println!("{}", urls.path);
    Ok(())
}

/// The proxy address the control plane has for `host_id` (`http://ip:port`).
async fn host_proxy(g: &GlobalArgs, host_id: &str) -> Result<Option<SocketAddr>> {
    let mut hosts = g.connect_hosts().await?;
    let list = hosts
        .list(ListHostsRequest {})
        .await
        .context("list hosts")?
        .into_inner()
        .hosts;
    Ok(list.into_iter().find(|h| h.id == host_id).and_then(|h| {
        let addr = h.proxy_address;
        let hostport = addr.strip_prefix("http://").unwrap_or(&addr);
        hostport.trim_end_matches('/').parse().ok()
    }))
}
