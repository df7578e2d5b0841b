//! Pingora's `HttpProxy` as a transport of the request pipeline
//! (`pipeline/`): each `ProxyHttp` hook calls one pipeline step and applies
//! what it decides to Pingora's session and header maps.
//!
//! # Design
//! - `request_filter` runs [`WrennProxy::route`] on the parsed head and
//!   writes its answer (308/400/403/404/409/421) when there is one.
//! - Connect retry: `fail_to_connect` marks connect failures retryable until
//!   `connect_attempts` is reached; `upstream_peer` is the pipeline's
//!   `attempt_peer` (backoff, route re-check).
//! - Pool isolation: each peer's `group_key` is unique per (sandbox,
//!   generation, port); the in-flight cap is enforced with `Connection: close`.
//! - Everything the proxy writes itself is a pipeline
//!   [`Answer`](crate::pipeline::Answer).

mod answer;
mod heads;

use async_trait::async_trait;
use http::header;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::failure::Failure;
use crate::pipeline::{Request, RequestCtx, WrennProxy, envd, is_connect_error};
use crate::target::RoutingHeaders;

#[async_trait]
impl ProxyHttp for WrennProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
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

    /// Routes the request; `Ok(true)`: the proxy answered it itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        let mut routing = RoutingHeaders::default();
        let mut access_token = false;
        for (name, value) in &req.headers {
            if !routing.offer(name.as_str(), value.as_bytes()) {
                access_token |= envd::is_access_token(name.as_str(), value.as_bytes());
            }
        }
        let request = Request {
            method: req.method.as_str(),
            access_token,
            host: req.headers.get(header::HOST).map(|v| v.as_bytes()),
            all_hosts: req
                .headers
                .get_all(header::HOST)
                .iter()
                .map(|v| v.as_bytes()),
            routing,
            target: req.raw_path(),
        };
        if let Err(answer) = self.route(request, ctx) {
            self.respond(session, ctx, answer).await;
            return Ok(true);
        }
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
            self.respond(session, ctx, f.into()).await
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
