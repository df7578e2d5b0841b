//! The upstream response head as the fast path reads it, and the client's
//! head written from it with the pipeline's response edits.

use super::chunked::Chunked;
use super::{Plan, push_header};
use crate::pipeline::response::{self, Edit};

/// Headers parsed per upstream response head.
const RESPONSE_HEADERS: usize = 128;

/// A parsed upstream response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub http10: bool,
    /// `Connection: close` from the upstream.
    pub upstream_close: bool,
    pub body: Body,
    /// The client connection ends after this response.
    pub close_client: bool,
}

/// How the response body is delimited.
#[derive(Debug)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes.
    Close,
}

/// What the client's response head needs: written as the upstream's is parsed.
pub(super) struct Reply<'a> {
    pub plan: &'a Plan,
    /// Whether the client connection ends after this response.
    pub closing: &'a (dyn Fn() -> bool + Sync),
    pub out: &'a mut Vec<u8>,
}

/// Parses an upstream response head and, for a final response with `reply`,
/// writes the client's head to `reply.out`: HTTP/1.1, the pipeline's
/// response edits, `connection: close` when the client connection ends.
/// `Ok(None)`: incomplete; `Err`: malformed.
pub(super) fn parse_response(
    buf: &[u8],
    reply: Option<&mut Reply<'_>>,
) -> Result<Option<ResponseHead>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let http10 = resp.version == Some(0);
    let (mut length, mut te, mut upstream_close) = (None, None, false);
    for h in resp.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("content-length") {
            let n: u64 = std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        } else if is("transfer-encoding") {
            if te.is_some() {
                return Err(());
            }
            te = Some(h.value.trim_ascii());
        } else if is("connection") {
            upstream_close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let mut body = match (te, length) {
        (Some(te), _) if te.eq_ignore_ascii_case(b"chunked") => Body::Chunked(Chunked::default()),
        (Some(_), _) => Body::Close,
        (None, Some(n)) => Body::Length(n),
        (None, None) => Body::Close,
    };
    let mut close_client = false;
    if let Some(reply) = reply.filter(|_| !(100..200).contains(&status)) {
        if reply.plan.head_only || status == 204 || status == 304 {
            body = Body::None;
        }
        close_client = (reply.closing)() || matches!(body, Body::Close);
        let out = &mut *reply.out;
        out.clear();
        client_head(&resp, reply.plan, te.is_some(), close_client, out)?;
    }
    Ok(Some(ResponseHead {
        len,
        status,
        http10,
        upstream_close,
        body,
        close_client,
    }))
}

/// Writes the client's response head for the parsed upstream `resp`.
fn client_head(
    resp: &httparse::Response<'_, '_>,
    plan: &Plan,
    chunked: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<(), ()> {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.code.ok_or(())?).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let rw = response::rewrite_ctx(&plan.ctx, plan.host()).ok_or(())?;
    for h in resp.headers.iter() {
        match response::edit(&rw, h.name, h.value, chunked) {
            Edit::Keep => push_header(out, h.name, h.value),
            Edit::Replace(new) => push_header(out, h.name, &new),
            Edit::Drop => {}
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}
