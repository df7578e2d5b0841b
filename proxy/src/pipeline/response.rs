//! The response head: what differs from the upstream's (one edit list both
//! transports apply). Hop-by-hop headers are dropped (each transport writes
//! its own `connection`), `Content-Length` goes with a chunked body, and
//! `Location`, `Content-Location`, `Refresh` and (path form) `Set-Cookie`
//! are rewritten back into the URL form the client used ([`RewriteCtx`]).

use super::RequestCtx;
use crate::rewrite::RewriteCtx;

/// Hop-by-hop response headers never passed on; Pingora's HTTP stack drops
/// them itself, the fast path skips them while copying.
const HOP_BY_HOP: [&str; 3] = ["connection", "keep-alive", "proxy-connection"];

/// The response headers rewriting may change, for a transport that looks
/// them up in a header map rather than reading every header.
pub(crate) const REWRITTEN: [&str; 4] = ["location", "content-location", "refresh", "set-cookie"];

/// What becomes of one upstream response header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Edit {
    Keep,
    Drop,
    Replace(Vec<u8>),
}

/// The edit of the upstream response header `name: value`; `chunked` when
/// the body is sent chunked (its `Content-Length` would contradict it).
pub(crate) fn edit(rw: &RewriteCtx<'_>, name: &str, value: &[u8], chunked: bool) -> Edit {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    if HOP_BY_HOP.iter().any(|h| is(h)) || (chunked && is("content-length")) {
        return Edit::Drop;
    }
    match rw.header(name, value) {
        Some(new) => Edit::Replace(new),
        None => Edit::Keep,
    }
}

/// The rewriting context of a routed request whose client sent `host`;
/// `None` before routing.
pub(crate) fn rewrite_ctx<'a>(
    ctx: &'a RequestCtx,
    host: Option<&'a [u8]>,
) -> Option<RewriteCtx<'a>> {
    let route = ctx.route.as_ref()?;
    Some(RewriteCtx {
        form: ctx.form?,
        id: route.id.as_str(),
        port: ctx.port,
        sandbox_addr: route.address,
        public_host: host,
    })
}
