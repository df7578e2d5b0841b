//! Header edits on the way up (prefix stripping, forwarded headers, Host
//! policy, the in-flight cap) and on the way down (Location and friends).

use http::{HeaderValue, header};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::{RequestCtx, WrennProxy, names};
use crate::rewrite::RewriteCtx;
use crate::routes::{HostPolicy, PrefixPolicy};
use crate::target::Form;

impl WrennProxy {
    /// Shapes the request sent upstream (after Pingora dropped hop-by-hop headers).
    pub(super) fn edit_upstream_request(
        &self,
        session: &Session,
        up: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let req = session.req_header();
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::new_in(ErrorType::InternalError))?;
        // Path form: the prefix is stripped unless the app serves under it.
        let strip = route.options.prefix_policy(ctx.port) == PrefixPolicy::Strip;
        if let Some(off) = ctx.path_offset.filter(|_| strip) {
            up.set_raw_path(&req.raw_path()[off..])?;
        }
        if let Some(host) = req.headers.get(header::HOST) {
            up.insert_header("x-forwarded-host", host.clone())?;
        }
        if route.options.host_policy(ctx.port) == HostPolicy::Localhost {
            up.insert_header(header::HOST, format!("localhost:{}", ctx.port))?;
        }
        // The client's own address; whatever the client claimed is dropped.
        match session.client_addr().and_then(|a| a.as_inet()) {
            Some(addr) => up.insert_header("x-forwarded-for", addr.ip().to_string())?,
            None => {
                up.remove_header(&names::X_FORWARDED_FOR);
            }
        }
        up.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
        if ctx.form == Some(Form::Path) && strip {
            up.insert_header(
                "x-forwarded-prefix",
                format!("/proxy/{}/{}", route.id, ctx.port),
            )?;
        } else if up.headers.contains_key(&names::X_FORWARDED_PREFIX) {
            up.remove_header(&names::X_FORWARDED_PREFIX);
        }
        if !ctx.upgrade && ctx.in_flight > self.max_in_flight {
            up.insert_header(header::CONNECTION, HeaderValue::from_static("close"))?;
            self.metrics.forced_close.inc();
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
            .get(&names::REFRESH)
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
}
