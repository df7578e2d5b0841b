//! How a request ends: the answers the proxy gives itself ([`Answer`]),
//! upstream faults as failures ([`Fault`], [`WrennProxy::classify`]), and
//! the metrics and access-log line ([`WrennProxy::finished`]).

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;

use super::{RequestCtx, WrennProxy};
use crate::failure::{self, Failure};
use crate::target::Form;

/// A response the proxy writes itself instead of proxying.
#[derive(Debug)]
pub(crate) enum Answer {
    Failure(Failure),
    /// `308` to this `Location` (`/proxy/<id>/<port>` without its slash).
    Redirect(http::HeaderValue),
}

impl From<Failure> for Answer {
    fn from(f: Failure) -> Self {
        Answer::Failure(f)
    }
}

impl Answer {
    /// The 308 to `location`, or a 400 when it cannot be a header value.
    pub(crate) fn redirect(location: Vec<u8>) -> Answer {
        match http::HeaderValue::from_bytes(&location) {
            Ok(v) => Answer::Redirect(v),
            Err(_) => Answer::Failure(Failure::BadRequest {
                message: "the request target cannot be redirected".into(),
                sandbox_id: None,
                port: None,
            }),
        }
    }

    /// Head and body, HTML or JSON as the client prefers (`html`).
    pub(crate) fn response(&self, html: bool) -> (ResponseHeader, Bytes) {
        match self {
            Answer::Failure(f) => f.response(html),
            Answer::Redirect(location) => failure::redirect(location.clone()),
        }
    }
}

/// How an upstream exchange failed before the response head went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Nothing listens on the port (connection refused).
    Refused,
    /// The sandbox cannot be reached (connect timeout, no route, socket error).
    Unreachable,
    /// No response (head) within the upstream read or write timeout.
    Timeout,
    /// The app broke or garbled the response.
    Broke,
}

impl WrennProxy {
    /// The failure to answer for `fault` on this request's sandbox port.
    pub(crate) fn failure_for(&self, fault: Fault, ctx: &RequestCtx) -> Failure {
        let Some(r) = &ctx.route else {
            return Failure::Internal;
        };
        let (id, port) = (r.id.to_string(), ctx.port);
        match fault {
            Fault::Refused => Failure::PortClosed { id, port },
            Fault::Unreachable => Failure::Unreachable { id, port },
            Fault::Timeout => Failure::UpstreamTimeout { id, port },
            Fault::Broke => Failure::UpstreamBroke { id, port },
        }
    }

    /// The failure class of a Pingora error; `None` when the client is gone.
    pub(crate) fn classify(&self, e: &Error, ctx: &RequestCtx) -> Option<Failure> {
        let Some(r) = &ctx.route else {
            return Some(Failure::Internal);
        };
        let fault = match (e.esource(), e.etype()) {
            (_, ErrorType::ConnectRefused) => Fault::Refused,
            (_, t) if is_connect_type(t) || *t == ErrorType::BindError => Fault::Unreachable,
            (ErrorSource::Downstream, _) => return None,
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                Fault::Timeout
            }
            (ErrorSource::Upstream, _) => Fault::Broke,
            (_, ErrorType::HTTPStatus(400)) => {
                return Some(Failure::BadRequest {
                    message: e.to_string(),
                    sandbox_id: Some(r.id.to_string()),
                    port: Some(ctx.port),
                });
            }
            _ => return Some(Failure::Internal),
        };
        Some(self.failure_for(fault, ctx))
    }

    /// Metrics and the one access-log line of a finished request, whichever
    /// transport served it.
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
pub(crate) fn is_connect_error(e: &Error) -> bool {
    is_connect_type(e.etype())
}
