//! The Pingora `ProxyHttp` implementation: routing, retry, header rewriting,
//! error pages, metrics and the access log, one hook at a time.
//!
//! # Design
//! - `request_filter` checks the `Host` ([`crate::hosts`]), parses the URL
//!   form, looks the sandbox up in the route table (lock-free) and answers
//!   308/400/404/409/421 itself.
//! - Connect retry: `fail_to_connect` marks connect failures retryable until
//!   `connect_attempts` is reached; `upstream_peer` sleeps `n × backoff`
//!   before attempt `n + 1` and re-checks the route, so a sandbox destroyed
//!   during the backoff answers 404 instead of being dialled again.
//! - Pool isolation: each peer's `group_key` is unique per (sandbox,
//!   generation, port); the in-flight cap is enforced with `Connection: close`.
//! - Everything the proxy writes itself goes through [`Failure`].

mod headers;
mod names;
mod outcome;
mod routing;

pub(crate) use headers::UpstreamEdits;
pub(crate) use outcome::Finished;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::config::ProxyConfig;
use crate::connect::{PeerSettings, UpstreamConnector};
use crate::deadline::ConnState;
use crate::failure::Failure;
use crate::hosts::AllowedHosts;
use crate::metrics::Metrics;
use crate::routes::{Route, RouteTable};
use crate::target::Form;
use outcome::is_connect_error;

/// Per-request state shared by the hooks (and by the fast path, `fast.rs`).
#[derive(Debug)]
pub struct RequestCtx {
    pub(crate) start: Instant,
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) form: Option<Form>,
    pub(crate) port: u16,
    /// Path form: where the upstream target starts in the raw request target.
    pub(crate) path_offset: Option<usize>,
    pub(crate) upgrade: bool,
    pub(crate) attempts: u32,
    pub(crate) connect_failures: u32,
    pub(crate) reused: bool,
    /// In-flight count of this request's upstream when it connected; 0 when not counted.
    pub(crate) in_flight: u32,
    pub(crate) failure: Option<Failure>,
}

impl RequestCtx {
    pub(crate) fn new() -> Self {
        RequestCtx {
            start: Instant::now(),
            route: None,
            form: None,
            port: 0,
            path_offset: None,
            upgrade: false,
            attempts: 0,
            connect_failures: 0,
            reused: false,
            in_flight: 0,
            failure: None,
        }
    }
}

/// The proxy logic; one instance per proxy thread, sharing routes, metrics
/// and the connector.
#[derive(Clone)]
pub struct WrennProxy {
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) connector: Arc<dyn UpstreamConnector>,
    pub(crate) peer: PeerSettings,
    pub(crate) domain: String,
    pub(crate) connect_attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_in_flight: u32,
    pub(crate) keepalive_idle_secs: u64,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) websocket_idle: Duration,
    pub(crate) access_log: bool,
    pub(crate) denied_ports: Vec<u16>,
    /// The `Host` values the proxy listener answers.
    pub(crate) hosts: Arc<AllowedHosts>,
}

impl WrennProxy {
    pub(crate) fn new(
        config: &ProxyConfig,
        routes: Arc<RouteTable>,
        metrics: Arc<Metrics>,
        connector: Arc<dyn UpstreamConnector>,
        hosts: Arc<AllowedHosts>,
    ) -> Self {
        WrennProxy {
            routes,
            metrics,
            connector,
            peer: PeerSettings::from_config(config),
            domain: config.domain.to_ascii_lowercase(),
            connect_attempts: config.connect_attempts,
            backoff: Duration::from_millis(config.connect_backoff_ms),
            max_in_flight: config.upstream_max_in_flight,
            keepalive_idle_secs: config.keepalive_idle_secs,
            read_timeout: Duration::from_secs(config.read_timeout_secs),
            write_timeout: Duration::from_secs(config.write_timeout_secs),
            websocket_idle: Duration::from_secs(config.websocket_idle_secs),
            access_log: config.access_log,
            denied_ports: config.denied_ports.clone(),
            hosts,
        }
    }
}

impl WrennProxy {
    /// Counts a failed connect attempt; whether another attempt may follow
    /// (connect failures only: nothing was sent upstream).
    pub(crate) fn connect_failed(&self, ctx: &mut RequestCtx, e: &Error) -> bool {
        ctx.connect_failures += 1;
        self.metrics.connect_attempts.inc();
        let retry = is_connect_error(e) && ctx.connect_failures < self.connect_attempts;
        if retry {
            self.metrics.connect_retries.inc();
        }
        retry
    }

    /// Counts an upstream connection in use: pool reuse, per-sandbox open
    /// connections and the in-flight count of its (sandbox, port).
    pub(crate) fn connected(&self, ctx: &mut RequestCtx, reused: bool) {
        ctx.reused = reused;
        if reused {
            self.metrics.upstream_reused.inc();
        } else {
            self.metrics.upstream_new.inc();
            self.metrics.connect_attempts.inc();
        }
        // A retry after a stale pooled connection connects again: count once.
        self.release(ctx);
        if let Some(r) = &ctx.route {
            ctx.in_flight = r.in_flight.acquire(ctx.port);
            r.open.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl ProxyHttp for WrennProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Runs once the request headers are in: stops the header deadline.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(conn) = prev.downcast::<Arc<ConnState>>() {
            conn.disarm();
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        session.set_keepalive(Some(self.keepalive_idle_secs));
        session.set_read_timeout(Some(self.read_timeout));
        session.set_write_timeout(Some(self.write_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.route(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.attempt_peer(ctx).await
    }

    /// Connect failures are retried (nothing was sent) until `connect_attempts`.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = self.connect_failed(ctx, &e);
        e.set_retry(retry);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.connected(ctx, reused);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.edit_upstream_request(session, up, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.rewrite_response(session, resp, ctx)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(f) = ctx.failure.take().or_else(|| self.classify(e, ctx)) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = if session.response_written().is_some() {
            // Headers are out already (the app broke mid-body): nothing more to say.
            let s = f.status();
            ctx.failure = Some(f);
            s
        } else {
            self.respond(session, ctx, f).await
        };
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Expected outcomes are in the access log and the metrics already;
    /// Pingora's own error line is kept for the app breaking and for bugs.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        let unexpected = matches!(
            ctx.failure,
            None | Some(Failure::Internal | Failure::UpstreamBroke { .. })
        );
        is_connect_error(e)
            || matches!(e.etype(), ErrorType::HTTPStatus(_))
            || *e.esource() == ErrorSource::Downstream
            || !unexpected
    }

    /// Connect retries are counted in `wrenn_proxy_connect_retries_total`.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        e: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        is_connect_error(e)
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let summary = session.as_ref().request_summary();
        match &ctx.route {
            Some(r) => format!("{summary}, sandbox {} port {}", r.id, ctx.port),
            None => summary,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.release(ctx);
        self.record(session, e, ctx);
    }
}
