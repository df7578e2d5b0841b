//! Bare Pingora: Pingora's stock server and listener with the least a
//! path-form proxy does (strip `/proxy/<id>/<port>`, set X-Forwarded-*, keep
//! the Host, keep-alive upstream pool as large as wrenn's), and nothing of
//! wrenn's (route table, rewriting, retries, metrics, access log, header
//! deadline). Measured next to wrenn's proxy and nginx, it separates what
//! Pingora itself costs from what wrenn adds on top.
//!
//! It runs as a child process of `wrenn-bench` (the hidden subcommand
//! [`SUBCOMMAND`]), so its CPU time is its own, like nginx's.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use nix::sys::signal::Signal;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};

/// `wrenn-bench __pingora-bare <upstream> <listen> <threads>`.
pub const SUBCOMMAND: &str = "__pingora-bare";

/// The bare Pingora proxy, running; stopped on drop.
pub struct Bare {
    child: Child,
    pub listen: SocketAddr,
}

impl Bare {
    /// Starts it with `threads` worker threads in front of `upstream`.
    pub async fn start(threads: usize, upstream: SocketAddr) -> anyhow::Result<Self> {
        let [listen] = crate::platform::free_ports::<1>()?;
        let child = Command::new(std::env::current_exe()?)
            .args([
                SUBCOMMAND,
                &upstream.to_string(),
                &listen.to_string(),
                &threads.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the bare Pingora proxy")?;
        let mut bare = Bare { child, listen };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = bare.child.try_wait()? {
                bail!("the bare Pingora proxy exited at start ({status})");
            }
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return Ok(bare);
            }
            if Instant::now() > deadline {
                bail!("the bare Pingora proxy did not listen on {listen} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        // SIGINT: Pingora's fast shutdown.
        crate::procstat::stop(&mut self.child, Signal::SIGINT, Duration::from_secs(5));
    }
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

/// `/proxy/<id>/<port>/rest` → `/rest` (with the query), as nginx's location does.
fn strip_prefix(target: &str) -> Option<&str> {
    let after = target.strip_prefix("/proxy/")?;
    let (_id, after) = after.split_once('/')?;
    let slash = after.find('/')?;
    Some(&after[slash..])
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

#[cfg(test)]
mod tests {
    use super::strip_prefix;

    #[test]
    fn the_path_form_prefix_is_stripped_like_nginx_does() {
        assert_eq!(strip_prefix("/proxy/abc/8080/1k"), Some("/1k"));
        assert_eq!(strip_prefix("/proxy/abc/8080/a/b?q=1"), Some("/a/b?q=1"));
        assert_eq!(strip_prefix("/proxy/abc/8080"), None);
        assert_eq!(strip_prefix("/1k"), None);
    }
}
