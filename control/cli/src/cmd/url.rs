//! `wrenn url <id> <port>` — both URL forms that reach a sandbox port.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use wrenn_proto::wrenn::v1::SandboxRef;
use wrenn_types::SandboxId;

use crate::client::GlobalArgs;

#[derive(Args)]
pub struct UrlArgs {
    id: String,
    /// Port the app listens on inside the sandbox (1-65535).
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The proxy's address as browsers reach it.
    #[arg(long, env = "WRENN_PROXY_LISTEN", default_value = wrenn_proxy::config::DEFAULT_LISTEN)]
    proxy: SocketAddr,
    /// Domain of subdomain URLs.
    #[arg(long, env = "WRENN_PROXY_DOMAIN", default_value = wrenn_proxy::config::DEFAULT_DOMAIN)]
    domain: String,
    /// Print the URLs without asking the control plane whether the sandbox exists.
    #[arg(long)]
    offline: bool,
}

pub async fn run(g: &GlobalArgs, a: UrlArgs) -> Result<()> {
    let id: SandboxId = a.id.parse()?;
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
    }
    let urls = wrenn_proxy::sandbox_urls(
        &a.domain,
        &wrenn_proxy::public_host(a.proxy),
        a.proxy.port(),
        &id,
        a.port,
    );
    println!("{}", urls.subdomain);
    println!("{}", urls.path);
    Ok(())
}
