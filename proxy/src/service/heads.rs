//! The pipeline's edit lists applied to Pingora's header maps: the
//! upstream request head (`upstream_request_filter`) and the response head
//! (`upstream_response_filter`).

use http::header;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::pipeline::response::{self, Edit, REWRITTEN};
use crate::pipeline::{RequestCtx, WrennProxy, upstream};

impl WrennProxy {
    /// Shapes the request sent upstream (Pingora dropped the hop-by-hop
    /// headers already).
    pub(super) fn edit_upstream_request(
        &self,
        session: &Session,
        up: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let req = session.req_header();
        let edits = self
            .upstream_edits(ctx)
            .ok_or_else(|| Error::new_in(ErrorType::InternalError))?;
        if let Some(off) = edits.strip_from {
            up.set_raw_path(&req.raw_path()[off..])?;
        }
        for name in edits.replaced() {
            up.remove_header(name);
        }
        let host = req.headers.get(header::HOST).map(|v| v.as_bytes());
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
        let mut added = Ok(());
        upstream::added(ctx, edits, host, client_ip.as_deref(), |name, value| {
            if added.is_ok() {
                let mut v = Vec::new();
                value(&mut v);
                added = up.append_header(name, v).map(drop);
            }
        });
        added?;
        if self.force_close(ctx) {
            up.insert_header(header::CONNECTION, "close")?;
        }
        Ok(())
    }

    /// Rewrites the response head for the client. Nothing is allocated when
    /// no header needs a change.
    pub(super) fn rewrite_response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &RequestCtx,
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
        let host = session
            .req_header()
            .headers
            .get(header::HOST)
            .map(|v| v.as_bytes());
        let Some(rw) = response::rewrite_ctx(ctx, host) else {
            return Ok(());
        };
        for name in REWRITTEN {
            let edited =
                |v: &http::HeaderValue| match response::edit(&rw, name, v.as_bytes(), false) {
                    Edit::Replace(new) => Some(new),
                    Edit::Keep | Edit::Drop => None,
                };
            // Most responses have nothing to rewrite: look before allocating.
            if !resp
                .headers
                .get_all(name)
                .iter()
                .any(|v| edited(v).is_some())
            {
                continue;
            }
            let values: Vec<Vec<u8>> = resp
                .headers
                .get_all(name)
                .iter()
                .map(|v| edited(v).unwrap_or_else(|| v.as_bytes().to_vec()))
                .collect();
            resp.remove_header(name);
            for v in values {
                resp.append_header(name, v)?;
            }
        }
        Ok(())
    }
}
