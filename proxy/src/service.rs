//! The Pingora `ProxyHttp` implementation: routing, retry, header rewriting,
//! error pages, metrics and the access log, one hook at a time.
//!
//! # Design
//! - `request_filter` parses the URL form, looks the sandbox up in the route
//!   table (lock-free) and answers 308/400/404/409 itself.
//! - Connect retry: `fail_to_connect` marks connect failures retryable until
//!   `connect_attempts` is reached; `upstream_peer` sleeps `n × backoff`
//!   before attempt `n + 1` and re-checks the route, so a sandbox destroyed
//!   during the backoff answers 404 instead of being dialled again.
//! - Pool isolation: each peer's `group_key` is unique per (sandbox,
//!   generation, port); the in-flight cap is enforced with `Connection: close`.
//! - Everything the proxy writes itself goes through [`Failure`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::config::ProxyConfig;
use crate::connect::{PeerSettings, UpstreamConnector};
use crate::deadline::ConnState;
use crate::failure::{self, Failure};
use crate::metrics::Metrics;
use crate::rewrite::RewriteCtx;
use crate::routes::{HostPolicy, Route, RouteState, RouteTable};
use crate::target::{self, Form, Parsed, RequestView};

/// Per-request state shared by the hooks.
#[derive(Debug)]
pub struct RequestCtx {
    start: Instant,
    route: Option<Arc<Route>>,
    form: Option<Form>,
    port: u16,
    /// Path form: where the upstream target starts in the raw request target.
    path_offset: Option<usize>,
    upgrade: bool,
    attempts: u32,
    connect_failures: u32,
    reused: bool,
    /// In-flight count of this request's upstream when it connected; 0 when not counted.
    in_flight: u32,
    failure: Option<Failure>,
}

/// The proxy logic; one instance serves every request.
pub struct WrennProxy {
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) metrics: Arc<Metrics>,
    connector: Arc<dyn UpstreamConnector>,
    peer: PeerSettings,
    domain: String,
    connect_attempts: u32,
    backoff: Duration,
    max_in_flight: u32,
    keepalive_idle_secs: u64,
    read_timeout: Duration,
    write_timeout: Duration,
    websocket_idle: Duration,
    access_log: bool,
    denied_ports: Vec<u16>,
}

impl WrennProxy {
    pub(crate) fn new(
        config: &ProxyConfig,
        routes: Arc<RouteTable>,
        metrics: Arc<Metrics>,
        connector: Arc<dyn UpstreamConnector>,
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
        }
    }

    /// Writes the response for `f`, HTML or JSON as the client prefers.
    async fn respond(&self, session: &mut Session, ctx: &mut RequestCtx, f: Failure) -> u16 {
        let req = session.req_header();
        let html = failure::wants_html(
            req.headers.get(header::ACCEPT).map(|v| v.as_bytes()),
            req.headers.get("sec-fetch-mode").map(|v| v.as_bytes()),
        );
        let (head, body) = f.response(html);
        let status = f.status();
        ctx.failure = Some(f);
        write_own(session, head, body).await;
        status
    }

    /// The failure class of a Pingora error; `None` when the client is gone.
    fn classify(&self, e: &Error, ctx: &RequestCtx) -> Option<Failure> {
        let (id, port) = match &ctx.route {
            Some(r) => (r.id.to_string(), ctx.port),
            None => return Some(Failure::Internal),
        };
        let f = match (e.esource(), e.etype()) {
            (_, ErrorType::ConnectRefused) => Failure::PortClosed { id, port },
            (
                _,
                ErrorType::ConnectTimedout
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::SocketError
                | ErrorType::BindError,
            ) => Failure::Unreachable { id, port },
            (ErrorSource::Downstream, _) => return None,
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                Failure::UpstreamTimeout { id, port }
            }
            (ErrorSource::Upstream, _) => Failure::UpstreamBroke { id, port },
            (_, ErrorType::HTTPStatus(400)) => Failure::BadRequest {
                message: e.to_string(),
                sandbox_id: Some(id),
                port: Some(port),
            },
            _ => Failure::Internal,
        };
        Some(f)
    }

    fn release(&self, ctx: &mut RequestCtx) {
        if ctx.in_flight > 0
            && let Some(r) = &ctx.route
        {
            r.in_flight.release(ctx.port);
            r.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            ctx.in_flight = 0;
        }
    }
}

/// Writes a response the proxy made itself (no body for HEAD).
async fn write_own(session: &mut Session, head: ResponseHeader, body: Bytes) {
    let head_only = session.req_header().method == http::Method::HEAD;
    if session.is_process_shutting_down() {
        session.set_keepalive(None);
    }
    if session
        .write_response_header(Box::new(head), head_only)
        .await
        .is_ok()
        && !head_only
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

fn is_connect_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::SocketError
    )
}

#[async_trait]
impl ProxyHttp for WrennProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
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
        let req = session.req_header();
        let h = |name: &str| req.headers.get(name).map(|v| v.as_bytes());
        let view = RequestView {
            host: h("host"),
            target: req.raw_path(),
            id_header: h("wrenn-sandbox-id").or_else(|| h("e2b-sandbox-id")),
            port_header: h("wrenn-sandbox-port").or_else(|| h("e2b-sandbox-port")),
        };
        let t = match target::parse(&self.domain, view) {
            Parsed::Target(t) => t,
            Parsed::Redirect(location) => {
                if let Some((head, body)) = failure::redirect(&location) {
                    write_own(session, head, body).await;
                } else {
                    let f = Failure::BadRequest {
                        message: "the request target cannot be redirected".into(),
                        sandbox_id: None,
                        port: None,
                    };
                    self.respond(session, ctx, f).await;
                }
                return Ok(true);
            }
            Parsed::NoRoute => {
                self.respond(
                    session,
                    ctx,
                    Failure::NoRoute {
                        domain: self.domain.clone(),
                    },
                )
                .await;
                return Ok(true);
            }
            Parsed::Bad(b) => {
                let f = Failure::BadRequest {
                    message: b.message,
                    sandbox_id: b.sandbox_id,
                    port: b.port,
                };
                self.respond(session, ctx, f).await;
                return Ok(true);
            }
        };
        ctx.form = Some(t.form);
        ctx.port = t.port;
        ctx.path_offset = t
            .upstream_path
            .map(|p| p.as_ptr() as usize - view.target.as_ptr() as usize);
        if self.denied_ports.contains(&t.port) {
            let f = Failure::PortDenied {
                id: t.id.into_owned(),
                port: t.port,
            };
            self.respond(session, ctx, f).await;
            return Ok(true);
        }
        let Some(route) = self.routes.get(&t.id) else {
            let f = Failure::NotFound {
                id: t.id.into_owned(),
            };
            self.respond(session, ctx, f).await;
            return Ok(true);
        };
        if route.state != RouteState::Running {
            let f = Failure::NotRunning {
                id: t.id.into_owned(),
                state: route.state,
            };
            ctx.route = Some(route);
            self.respond(session, ctx, f).await;
            return Ok(true);
        }
        ctx.route = Some(route);
        if session.is_upgrade_req() {
            ctx.upgrade = true;
            session.set_read_timeout(Some(self.websocket_idle));
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::new_in(ErrorType::InternalError))?;
        if ctx.connect_failures > 0 {
            tokio::time::sleep(self.backoff * ctx.connect_failures).await;
            // The sandbox may have been destroyed or replaced while we waited.
            match self.routes.get(route.id.as_str()) {
                Some(now) if now.generation == route.generation => {}
                Some(now) if now.state == RouteState::Running => {
                    ctx.route = Some(now.clone());
                    route = now;
                }
                _ => {
                    ctx.failure = Some(Failure::NotFound {
                        id: route.id.to_string(),
                    });
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(404),
                        "sandbox went away",
                    ));
                }
            }
        }
        ctx.attempts += 1;
        match self
            .connector
            .peer(&route, ctx.port, ctx.upgrade, &self.peer)
        {
            Some(peer) => Ok(peer),
            None => {
                ctx.failure = Some(Failure::Unreachable {
                    id: route.id.to_string(),
                    port: ctx.port,
                });
                Err(Error::explain(
                    ErrorType::ConnectNoRoute,
                    "no way to reach the sandbox",
                ))
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failures += 1;
        self.metrics.connect_attempts.inc();
        if is_connect_error(&e) && ctx.connect_failures < self.connect_attempts {
            self.metrics.connect_retries.inc();
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
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
            r.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let req = session.req_header();
        if let Some(off) = ctx.path_offset {
            up.set_raw_path(&req.raw_path()[off..])?;
        }
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::new_in(ErrorType::InternalError))?;
        if let Some(host) = req.headers.get(header::HOST) {
            up.insert_header("x-forwarded-host", host.clone())?;
        }
        if route.options.host_policy(ctx.port) == HostPolicy::Localhost {
            up.insert_header(header::HOST, format!("localhost:{}", ctx.port))?;
        }
        match session.client_addr().and_then(|a| a.as_inet()) {
            Some(addr) => up.insert_header("x-forwarded-for", addr.ip().to_string())?,
            None => {
                up.remove_header("x-forwarded-for");
            }
        }
        up.insert_header("x-forwarded-proto", "http")?;
        if ctx.form == Some(Form::Path) {
            up.insert_header(
                "x-forwarded-prefix",
                format!("/proxy/{}/{}", route.id, ctx.port),
            )?;
        } else {
            up.remove_header("x-forwarded-prefix");
        }
        if !ctx.upgrade && ctx.in_flight > self.max_in_flight {
            up.insert_header(header::CONNECTION, "close")?;
            self.metrics.forced_close.inc();
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            self.metrics.websocket_upgrades.inc();
            return Ok(());
        }
        if resp.status.is_informational() {
            return Ok(());
        }
        if session.is_process_shutting_down() {
            // Tell the client not to reuse this connection.
            session.set_keepalive(None);
        }
        let (Some(route), Some(form)) = (&ctx.route, ctx.form) else {
            return Ok(());
        };
        let rw = RewriteCtx {
            form,
            id: route.id.as_str(),
            port: ctx.port,
            sandbox_addr: route.address,
            public_host: session
                .req_header()
                .headers
                .get(header::HOST)
                .map(|v| v.as_bytes()),
        };
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(new) = resp
                .headers
                .get(&name)
                .and_then(|v| rw.location(v.as_bytes()))
            {
                resp.insert_header(name, new)?;
            }
        }
        if let Some(new) = resp
            .headers
            .get("refresh")
            .and_then(|v| rw.refresh(v.as_bytes()))
        {
            resp.insert_header("refresh", new)?;
        }
        if form == Form::Path && resp.headers.contains_key(header::SET_COOKIE) {
            let cookies: Vec<Vec<u8>> = resp
                .headers
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| {
                    rw.set_cookie(v.as_bytes())
                        .unwrap_or_else(|| v.as_bytes().to_vec())
                })
                .collect();
            resp.remove_header(&header::SET_COOKIE);
            for c in cookies {
                resp.append_header(header::SET_COOKIE, c)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let f = match ctx.failure.take() {
            Some(f) => Some(f),
            None => self.classify(e, ctx),
        };
        let Some(f) = f else {
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

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        // Expected outcomes are in the access log and the metrics already.
        is_connect_error(e)
            || matches!(e.etype(), ErrorType::HTTPStatus(_))
            || *e.esource() == ErrorSource::Downstream
            || ctx
                .failure
                .as_ref()
                .is_some_and(|f| !matches!(f, Failure::Internal | Failure::UpstreamBroke { .. }))
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        e: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        // Connect retries are counted in `wrenn_proxy_connect_retries_total`.
        is_connect_error(e)
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        match &ctx.route {
            Some(r) => format!(
                "{}, sandbox {} port {}",
                session.as_ref().request_summary(),
                r.id,
                ctx.port
            ),
            None => session.as_ref().request_summary(),
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.release(ctx);
        let m = &self.metrics;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        m.record_status(status);
        m.duration.observe(elapsed.as_secs_f64());
        let (bytes_in, bytes_out) = (session.body_bytes_read(), session.body_bytes_sent());
        m.request_bytes.inc_by(bytes_in as u64);
        m.response_bytes.inc_by(bytes_out as u64);
        if let Some(f) = &ctx.failure {
            m.record_failure(f);
        }
        if !self.access_log {
            return;
        }
        let req = session.req_header();
        let path = req.uri.path();
        tracing::info!(
            target: "wrenn_proxy::access",
            sandbox_id = ctx.route.as_ref().map(|r| r.id.as_str()),
            port = ctx.port,
            form = ctx.form.map(Form::as_str),
            method = req.method.as_str(),
            path,
            status,
            bytes_in,
            bytes_out,
            duration_us = elapsed.as_micros() as u64,
            attempts = ctx.attempts,
            reused = ctx.reused,
            upgrade = ctx.upgrade,
            error = ctx.failure.as_ref().map(Failure::code).or(e.map(|e| e.etype().as_str())),
        );
    }
}
