//! The pipeline's answers written on a Pingora session, and the access-log
//! line of a request Pingora served.

use bytes::Bytes;
use http::header;
use pingora_error::Error;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::failure;
use crate::pipeline::{Answer, Finished, RequestCtx, WrennProxy};

impl WrennProxy {
    /// Writes `answer`, HTML or JSON as the client prefers; its status.
    pub(super) async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Answer,
    ) -> u16 {
        let req = session.req_header();
        let html = failure::wants_html(
            req.headers.get(header::ACCEPT).map(|v| v.as_bytes()),
            req.headers.get("sec-fetch-mode").map(|v| v.as_bytes()),
        );
        let (head, body) = answer.response(html);
        let status = head.status.as_u16();
        if let Answer::Failure(f) = answer {
            ctx.failure = Some(f);
        }
        write_own(session, head, body).await;
        status
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
