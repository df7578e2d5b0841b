//! Which requests the fast path takes ([`FastPath::plan`]) and the
//! upstream request head it writes for them.

use std::ops::Range;

use bytes::Bytes;

use super::{FastPath, REQUEST_HEADERS, Scratch, push_header};
use crate::failure;
use crate::pipeline::{Request, RequestCtx, UpstreamEdits, envd, upstream};
use crate::target::RoutingHeaders;

/// Client-side facts of the request being served.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(super) head: Bytes,
    pub(super) ctx: RequestCtx,
    pub(super) head_only: bool,
    /// The client asked to close after this response.
    pub(super) client_close: bool,
    pub(super) html: bool,
    /// The target's path (no query), for the access log.
    pub(super) path: Range<usize>,
    pub(super) host: Option<Range<usize>>,
}

impl Plan {
    /// The client's `Host`.
    pub(super) fn host(&self) -> Option<&[u8]> {
        self.host.as_ref().map(|r| &self.head[r.clone()])
    }
}

impl FastPath {
    /// The plan for a complete request head from `client_ip`, with the
    /// upstream request head written to `scratch` (all but the edits that
    /// depend on the connection); `None` when Pingora serves it: anything
    /// but a bodiless HTTP/1.1 `GET` or `HEAD` with one `Host`, and every
    /// request the pipeline's `route` answers itself.
    pub(crate) fn plan(
        &self,
        head: &Bytes,
        client_ip: &str,
        scratch: &mut Scratch,
    ) -> Option<Plan> {
        let mut headers = [httparse::EMPTY_HEADER; REQUEST_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        // The listener cut the head at its first blank line; a head that
        // httparse ends elsewhere goes to Pingora, which reads it again.
        match req.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            _ => return None,
        }
        if req.version != Some(1) {
            return None;
        }
        let head_only = match req.method? {
            "GET" => false,
            "HEAD" => true,
            _ => return None,
        };
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - head.as_ptr() as usize;
            start..start + s.len()
        };
        let target_bytes = req.path?.as_bytes();
        let target = at(target_bytes);
        let path = target.start
            ..target.start
                + target_bytes
                    .iter()
                    .position(|&b| b == b'?')
                    .unwrap_or(target_bytes.len());
        let (mut host, mut routing) = (None, RoutingHeaders::default());
        let (mut accept, mut fetch_mode, mut client_close) = (None, None, false);
        let mut access_token = false;
        for h in req.headers.iter() {
            let name = h.name;
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("host") {
                if host.is_some() {
                    return None;
                }
                host = Some(h.value);
            } else if is("connection") {
                let v = h.value.trim_ascii();
                if v.eq_ignore_ascii_case(b"close") {
                    client_close = true;
                } else if !v.eq_ignore_ascii_case(b"keep-alive") {
                    return None;
                }
            } else if is("content-length")
                || is("transfer-encoding")
                || is("upgrade")
                || is("expect")
                || is("te")
            {
                return None;
            } else if routing.offer(name, h.value) {
                // A routing header: read by `route` as Pingora's path reads it.
            } else if is("accept") {
                accept = Some(h.value);
            } else if is("sec-fetch-mode") {
                fetch_mode = Some(h.value);
            } else if envd::is_access_token(name, h.value) {
                access_token = true;
            }
        }
        let mut ctx = RequestCtx::new();
        let request = Request {
            method: if head_only { "HEAD" } else { "GET" },
            access_token,
            host,
            all_hosts: host,
            routing,
            target: target_bytes,
        };
        // What the proxy answers itself, Pingora answers.
        self.proxy.route(request, &mut ctx).ok()?;
        let edits = self.proxy.upstream_edits(&ctx)?;
        upstream_head(&req, &ctx, edits, host, client_ip, &mut scratch.head);
        Some(Plan {
            head: head.clone(),
            ctx,
            head_only,
            client_close,
            html: failure::wants_html(accept, fetch_mode),
            path,
            host: host.map(at),
        })
    }
}

/// Writes the upstream request head (no final CRLF) to `out`: the client's
/// request line and headers minus the dropped ones, then wrenn's
/// (`pipeline::upstream`).
fn upstream_head(
    req: &httparse::Request<'_, '_>,
    ctx: &RequestCtx,
    edits: UpstreamEdits,
    host: Option<&[u8]>,
    client_ip: &str,
    out: &mut Vec<u8>,
) {
    out.clear();
    let target = req.path.unwrap_or("/").as_bytes();
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(edits.strip_from.map_or(target, |off| &target[off..]));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if !edits.dropped(h.name) {
            push_header(out, h.name, h.value);
        }
    }
    upstream::added(ctx, edits, host, Some(client_ip), |name, value| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        value(out);
        out.extend_from_slice(b"\r\n");
    });
}
