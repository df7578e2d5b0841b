//! Bare Pingora: Pingora's stock server and listener with the least a
//! path-form proxy does (strip `/proxy/<id>/<port>`, set X-Forwarded-*, keep
//! the Host, keep-alive upstream pool as large as wrenn's), and nothing of
//! wrenn's (route table, rewriting, retries, metrics, access log, header
//! deadline). Measured next to wrenn's proxy and nginx, it separates what
//! Pingora itself costs from what wrenn adds on top.
//!
//! It runs as a child process of `wrenn-bench` (the hidden subcommand
//! [`SUBCOMMAND`], see [`crate::reference`]).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};

use super::{RefProxy, strip_prefix};

/// `wrenn-bench __pingora-bare <upstream> <listen> <threads>`.
pub const SUBCOMMAND: &str = "__pingora-bare";

/// Starts bare Pingora with `threads` worker threads in front of `upstream`.
pub async fn start(threads: usize, upstream: SocketAddr) -> anyhow::Result<RefProxy> {
    RefProxy::start("the bare Pingora proxy", SUBCOMMAND, threads, upstream).await
}

struct BareProxy {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora_core::Result<()> {
        if let Some(rest) = strip_prefix(req.uri.path_and_query().map_or("/", |p| p.as_str())) {
            let uri = rest.parse().map_err(|e| {
                pingora_core::Error::because(pingora_core::ErrorType::InvalidHTTPHeader, "uri", e)
            })?;
            req.set_uri(uri);
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned();
        req.insert_header("x-forwarded-for", client)?;
        req.insert_header("x-forwarded-proto", "http")?;
        if let Some(h) = host {
            req.insert_header("x-forwarded-host", h)?;
        }
        Ok(())
    }
}

/// The child process: serves until SIGINT or SIGTERM.
pub fn serve(args: &[String]) -> anyhow::Result<()> {
    let [upstream, listen, threads] = args else {
        bail!("usage: wrenn-bench {SUBCOMMAND} <upstream> <listen> <threads>");
    };
    let upstream: SocketAddr = upstream.parse().context("upstream address")?;
    let threads: usize = threads.parse().context("threads")?;
    let conf = ServerConf {
        threads,
        // Per thread, like nginx's `keepalive 1024` per worker; wrenn-bench
        // gives wrenn's proxy the same total.
        upstream_keepalive_pool_size: 1024,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service =
        pingora_proxy::http_proxy_service(&server.configuration, BareProxy { upstream });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}
