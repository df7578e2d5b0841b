//! How a request ends: the responses the proxy writes itself, the failure
//! class of a Pingora error, and the metrics and access-log line.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{RequestCtx, WrennProxy};
use crate::failure::{self, Failure};
use crate::target::Form;

impl WrennProxy {
    /// Writes the response for `f`, HTML or JSON as the client prefers.
    pub(super) async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        f: Failure,
    ) -> u16 {
        let req = session.req_header();
        let html = failure::wants_html(
            req.headers.get(header::ACCEPT).map(|v| v.as_bytes()),
            req.headers
                .get(&super::header_names::SEC_FETCH_MODE)
                .map(|v| v.as_bytes()),
        );
        let (head, body) = f.response(html);
        let status = f.status();
        ctx.failure = Some(f);
        write_own(session, head, body).await;
        status
    }

    /// The failure class of a Pingora error; `None` when the client is gone.
    pub(crate) fn classify(&self, e: &Error, ctx: &RequestCtx) -> Option<Failure> {
        let (id, port) = match &ctx.route {
            Some(r) => (r.id.to_string(), ctx.port),
            None => return Some(Failure::Internal),
        };
        let f = match (e.esource(), e.etype()) {
            (_, ErrorType::ConnectRefused) => Failure::PortClosed { id, port },
            (_, t) if is_connect_type(t) || *t == ErrorType::BindError => {
                Failure::Unreachable { id, port }
            }
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

    /// Takes this request off its upstream's in-flight counters.
    pub(crate) fn release(&self, ctx: &mut RequestCtx) {
        if ctx.in_flight > 0
            && let Some(r) = &ctx.route
        {
            r.in_flight.release(ctx.port);
            r.open.fetch_sub(1, Ordering::Relaxed);
            ctx.in_flight = 0;
        }
    }

    /// Metrics and the one access-log line of a request Pingora served.
    pub(super) fn record(&self, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
        let req = session.req_header();
        self.finished(
            ctx,
            &Finished {
                status: session.response_written().map_or(0, |r| r.status.as_u16()),
                bytes_in: session.body_bytes_read(),
                bytes_out: session.body_bytes_sent(),
                method: req.method.as_str(),
                path: req.uri.path(),
                error: e.map(|e| e.etype().as_str()),
            },
        );
    }

    /// Metrics and the one access-log line of a finished request, whichever
    /// path served it.
    pub(crate) fn finished(&self, ctx: &RequestCtx, f: &Finished<'_>) {
        let m = &self.metrics;
        let elapsed = ctx.start.elapsed();
        m.record_status(f.status);
        m.duration.observe(elapsed.as_secs_f64());
        m.request_bytes.inc_by(f.bytes_in as u64);
        m.response_bytes.inc_by(f.bytes_out as u64);
        if let Some(failure) = &ctx.failure {
            m.record_failure(failure);
        }
        if !self.access_log {
            return;
        }
        tracing::info!(
            target: "wrenn_proxy::access",
            sandbox_id = ctx.route.as_ref().map(|r| r.id.as_str()),
            port = ctx.port,
            form = ctx.form.map(Form::as_str),
            method = f.method,
            // The path only: queries carry tokens.
            path = f.path,
            status = f.status,
            bytes_in = f.bytes_in,
            bytes_out = f.bytes_out,
            duration_us = elapsed.as_micros() as u64,
            attempts = ctx.attempts,
            reused = ctx.reused,
            upgrade = ctx.upgrade,
            error = ctx.failure.as_ref().map(Failure::code).or(f.error),
        );
    }
}

/// What the access log and the metrics need of a finished request.
pub(crate) struct Finished<'a> {
    /// 0: nothing was written.
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub method: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub error: Option<&'static str>,
}

/// Writes a response the proxy made itself (no body for HEAD).
pub(super) async fn write_own(session: &mut Session, head: ResponseHeader, body: Bytes) {
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

fn is_connect_type(t: &ErrorType) -> bool {
    matches!(
        t,
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::SocketError
    )
}

/// Failures of the connect step (nothing was sent upstream: safe to retry).
pub(super) fn is_connect_error(e: &Error) -> bool {
    is_connect_type(e.etype())
}
