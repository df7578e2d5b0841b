//! Header edits on the way up (prefix stripping, forwarded headers, Host
//! policy, the in-flight cap) and on the way down (Location and friends).

use http::{HeaderValue, header};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::{RequestCtx, WrennProxy, header_names};
use crate::rewrite::RewriteCtx;
use crate::routes::{HostPolicy, PrefixPolicy};
use crate::target::{Form, push_path_prefix};

/// How the request sent upstream differs from the client's, decided once for
/// both the Pingora path and the fast path (`fast.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamEdits {
    /// Path form with the prefix stripped: the upstream target starts at this
    /// offset of the raw target.
    pub strip_from: Option<usize>,
    /// `Host: localhost:<port>` instead of the public host.
    pub localhost_host: bool,
    /// `X-Forwarded-Prefix: /proxy/<id>/<port>`; otherwise any client value is dropped.
    pub prefix: bool,
}

impl WrennProxy {
    /// The edits for this request's upstream request, from its route and form.
    pub(crate) fn upstream_edits(&self, ctx: &RequestCtx) -> Option<UpstreamEdits> {
        let route = ctx.route.as_ref()?;
        // Path form: the prefix is stripped unless the app serves under it.
        let strip = route.options.prefix_policy(ctx.port) == PrefixPolicy::Strip;
        Some(UpstreamEdits {
            strip_from: ctx.path_offset.filter(|_| strip),
            localhost_host: route.options.host_policy(ctx.port) == HostPolicy::Localhost,
            prefix: ctx.form == Some(Form::Path) && strip,
        })
    }

    /// Whether the upstream request carries `Connection: close` because its
    /// (sandbox, port) is above the in-flight cap (known once connected);
    /// counts it.
    pub(crate) fn force_close(&self, ctx: &RequestCtx) -> bool {
        let close = !ctx.upgrade && ctx.in_flight > self.max_in_flight;
        if close {
            self.metrics.forced_close.inc();
        }
        close
    }

    /// Shapes the request sent upstream (after Pingora dropped hop-by-hop headers).
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
        if let Some(host) = req.headers.get(header::HOST) {
            up.insert_header("x-forwarded-host", host.clone())?;
        }
        if edits.localhost_host {
            up.insert_header(header::HOST, format!("localhost:{}", ctx.port))?;
        }
        // The client's own address; whatever the client claimed is dropped.
        match session.client_addr().and_then(|a| a.as_inet()) {
            Some(addr) => up.insert_header("x-forwarded-for", addr.ip().to_string())?,
            None => {
                up.remove_header(&header_names::X_FORWARDED_FOR);
            }
        }
        up.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
        if edits.prefix {
            let mut prefix = Vec::new();
            if let Some(r) = &ctx.route {
                push_path_prefix(&mut prefix, r.id.as_str(), ctx.port);
            }
            up.insert_header("x-forwarded-prefix", prefix)?;
        } else if up.headers.contains_key(&header_names::X_FORWARDED_PREFIX) {
            up.remove_header(&header_names::X_FORWARDED_PREFIX);
        }
        if self.force_close(ctx) {
            up.insert_header(header::CONNECTION, HeaderValue::from_static("close"))?;
        }
        Ok(())
    }

    /// Rewrites `Location`, `Content-Location`, `Refresh` and (path form)
    /// cookie paths of an upstream response. Nothing is allocated when none
    /// of them needs a change.
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
        for name in [
            header::LOCATION,
            header::CONTENT_LOCATION,
            header_names::REFRESH,
        ] {
            if let Some(new) = resp
                .headers
                .get(&name)
                .and_then(|v| rw.header(name.as_str(), v.as_bytes()))
            {
                resp.insert_header(name, new)?;
            }
        }
        if form == Form::Path && resp.headers.contains_key(header::SET_COOKIE) {
            let cookies: Vec<Vec<u8>> = resp
                .headers
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| {
                    rw.header("set-cookie", v.as_bytes())
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
}
