//! The fast path: plain `GET` and `HEAD` requests to a running sandbox,
//! proxied without Pingora's per-request HTTP machinery; Pingora serves
//! everything else on the same connection.
//!
//! # Why
//! On this project's 2-core bench machine Pingora's `HttpProxy` spends about
//! 19 µs of user CPU per proxied request (nginx: 4.5 µs), which capped wrenn
//! at 0.5–0.6× nginx's req/s for small responses (`wrenn-bench proxy`). The
//! work itself is small: parse a head, strip a prefix, add the forwarded
//! headers, pass the response through.
//!
//! # Design
//! - `listener.rs` reads each request head itself. [`FastPath::plan`] takes
//!   it when it is a bodiless HTTP/1.1 `GET` or `HEAD` (no `Content-Length`,
//!   `Transfer-Encoding`, `Upgrade`, `Expect` or `TE`; `Connection` at most
//!   `keep-alive` or `close`; one `Host`) for a *running* sandbox on an
//!   allowed port. Anything else (bodies, WebSocket upgrades, redirects and
//!   every routing error) is replayed into Pingora's `HttpProxy` unchanged,
//!   so both paths share the rules by sharing the code: routing
//!   (`target.rs`), connect retry (`attempt_peer`, `connect_failed`),
//!   upstream header edits (`upstream_edits`), response rewriting
//!   (`rewrite.rs`), error pages (`failure.rs`), metrics and the access log
//!   (`finished`).
//! - New upstream connections are dialled by Pingora's `TransportConnector`
//!   with the same peers as the Pingora path (timeouts, the netns dialer),
//!   then used as plain tokio sockets ([`into_tcp`]), as client connections
//!   are (`DeadlineStream`): Pingora's L4 stream reads the clock around
//!   every read and write that waits. Idle ones wait in a pool per proxy
//!   thread ([`pool::Pool`]) keyed by the peer's `reuse_hash`, so per
//!   sandbox generation and port.
//! - The response head is parsed (httparse) and rewritten; the body is
//!   passed through as it arrives: `Content-Length`, chunked (followed by
//!   [`chunked::Chunked`], sent as is) or, without either, until the
//!   upstream closes (then the client connection closes too).
//! - A pooled connection that turns out closed before any response byte
//!   arrives is replaced once by a new one (GET and HEAD are idempotent).
//! - While waiting for the upstream (its head or more of a streamed body),
//!   the client socket is watched: a client that goes away ends the
//!   exchange; bytes it sends early (a pipelined request) are kept for the
//!   next round.
//!
//! # Limitations
//! - HTTP/1.0 upstream responses are never pooled (`python3 -m http.server`
//!   answers in HTTP/1.0 and closes anyway).
//! - Informational responses other than 101 are passed on; a 101 without an
//!   upgrade request is a broken upstream.

mod chunked;
mod pool;

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::Stream;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::deadline::DeadlineStream;
use crate::failure::{self, Failure};
use crate::hosts::Listener;
use crate::rewrite::RewriteCtx;
use crate::routes::RouteState;
use crate::service::{Finished, RequestCtx, UpstreamEdits, WrennProxy};
use crate::target::{self, Parsed, RoutingHeaders};
use chunked::Chunked;
use pool::Pool;

/// Longest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Headers parsed per request head; a head with more goes to Pingora (up to
/// `MAX_REQUEST_HEADER_FIELDS`, which `listener.rs` enforces).
pub(crate) const REQUEST_HEADERS: usize = 64;
const RESPONSE_HEADERS: usize = 128;
/// Bytes read from the upstream at a time.
const READ_SIZE: usize = 16 * 1024;

/// The fast path of one proxy thread.
pub(crate) struct FastPath {
    proxy: WrennProxy,
    /// Dials new upstream connections (the peer's timeouts, the netns dialer).
    connector: TransportConnector,
    pool: Pool,
}

/// Client-side facts of the request being served.
#[derive(Debug)]
pub(crate) struct Plan {
    head: Bytes,
    ctx: RequestCtx,
    head_only: bool,
    /// The client asked to close after this response.
    client_close: bool,
    html: bool,
    /// The target's path (no query), for the access log.
    path: Range<usize>,
    host: Option<Range<usize>>,
}

/// Buffers a client connection keeps between requests.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Upstream bytes read.
    up: BytesMut,
    /// The upstream request head.
    head: Vec<u8>,
    /// The client response head.
    resp: Vec<u8>,
    /// The upstream read timeout, made at the first read and moved later for
    /// each (see `listener::Conn::timer`).
    timer: Option<Pin<Box<Sleep>>>,
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    KeepAlive,
    Close,
}

/// How an exchange with the upstream went wrong.
#[derive(Debug)]
enum Fail {
    /// Before any response byte: the failure to answer with.
    Answer(Failure),
    /// A broken or malformed response before its head was complete (502).
    Broke,
    /// No response head within the upstream read timeout (504).
    Timeout,
    /// A pooled connection was closed before any response byte: try a new one.
    Stale,
    /// The app broke the response after its head went out: close.
    Abort(&'static str),
    /// The client left or stopped reading: close.
    ClientGone(&'static str),
}

/// How the response body is delimited.
#[derive(Debug)]
enum Body {
    None,
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes.
    Close,
}

impl FastPath {
    pub(crate) fn new(proxy: WrennProxy, pool_size: usize) -> Self {
        FastPath {
            proxy,
            connector: TransportConnector::new(Some(ConnectorOptions::new(0))),
            pool: Pool::new(pool_size),
        }
    }

    /// Closes idle upstream connections as they expire or the upstream
    /// closes them; runs on the proxy thread for as long as it does.
    pub(crate) async fn sweep_idle(&self) {
        let idle = self.proxy.peer.idle_timeout;
        let mut every = tokio::time::interval(pool::SWEEP_EVERY);
        loop {
            every.tick().await;
            self.pool.sweep(idle);
        }
    }

    /// The plan for a complete request head from `client_ip`, with the
    /// upstream request head written to `scratch` (all but the edits that
    /// depend on the connection); `None` when Pingora serves it.
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
        for h in req.headers.iter() {
            let name = h.name;
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("host") {
                if host.is_some() {
                    return None;
                }
                host = Some(h.value);
            } else if is("connection") {
                let v = trim(h.value);
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
                // Kept as Pingora's path keeps it (`target::RoutingHeaders`).
            } else if is("accept") {
                accept = Some(h.value);
            } else if is("sec-fetch-mode") {
                fetch_mode = Some(h.value);
            }
        }
        // A `Host` the proxy does not answer: Pingora answers 421.
        let authority = target::authority(target_bytes);
        if self
            .proxy
            .hosts
            .check(Listener::Proxy, host, authority)
            .is_err()
        {
            return None;
        }
        let view = routing.view(host, target_bytes);
        let Parsed::Target(t) = target::parse(&self.proxy.domain, view) else {
            return None;
        };
        if self.proxy.denied_ports.contains(&t.port) {
            return None;
        }
        let route = self.proxy.routes.get(&t.id)?;
        if route.state != RouteState::Running {
            return None;
        }
        let mut ctx = RequestCtx::new();
        ctx.form = Some(t.form);
        ctx.port = t.port;
        ctx.path_offset = t
            .upstream_path
            .map(|p| p.as_ptr() as usize - target_bytes.as_ptr() as usize);
        ctx.route = Some(route);
        let edits = self.proxy.upstream_edits(&ctx)?;
        upstream_head(&req, &ctx, edits, client_ip, &mut scratch.head);
        let html = failure::wants_html(accept, fetch_mode);
        let host = host.map(at);
        Some(Plan {
            head: head.clone(),
            ctx,
            head_only,
            client_close,
            html,
            path,
            host,
        })
    }

    /// Serves a planned request on `client`, with `scratch` as `plan` left
    /// it; `last` when the connection ends after it anyway (request cap); it also
    /// ends when `shutdown` is true by the time the response starts. Bytes
    /// the client sends meanwhile are appended to `read_ahead`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn serve(
        &self,
        mut plan: Plan,
        client: &mut DeadlineStream,
        read_ahead: &mut BytesMut,
        scratch: &mut Scratch,
        last: bool,
        shutdown: &watch::Receiver<bool>,
    ) -> After {
        self.proxy.metrics.fast_path.inc();
        let last = last || plan.client_close;
        let closing = || last || *shutdown.borrow();
        let mut sent = Sent::default();
        let result = self
            .exchange(&mut plan, client, read_ahead, scratch, &closing, &mut sent)
            .await;
        let p = &self.proxy;
        let (after, error) = match result {
            Ok(after) => (after, None),
            Err(Fail::ClientGone(why)) => (After::Close, Some(why)),
            Err(Fail::Abort(why)) => {
                warn_broken(&plan.ctx, why);
                (After::Close, Some(why))
            }
            Err(fail) => {
                let f = match fail {
                    Fail::Answer(f) => f,
                    Fail::Timeout => upstream_failure(&plan.ctx, |id, port| {
                        Failure::UpstreamTimeout { id, port }
                    }),
                    // `Broke`; `Stale` never leaves `exchange` (a retry or `Broke`).
                    _ => {
                        warn_broken(&plan.ctx, "before its head ended");
                        upstream_failure(&plan.ctx, |id, port| Failure::UpstreamBroke { id, port })
                    }
                };
                let out = f.to_wire(plan.html, plan.head_only);
                sent.status = f.status();
                plan.ctx.failure = Some(f);
                let _ = self.write(client, &out, &[]).await;
                (After::Close, None)
            }
        };
        p.release(&mut plan.ctx);
        let head = &plan.head;
        let text = |r: &Range<usize>| std::str::from_utf8(&head[r.clone()]).unwrap_or("");
        p.finished(
            &plan.ctx,
            &Finished {
                status: sent.status,
                bytes_in: 0,
                bytes_out: sent.body_bytes,
                method: if plan.head_only { "HEAD" } else { "GET" },
                path: text(&plan.path),
                error,
            },
        );
        after
    }

    /// Connects (with the shared retry rules), sends the request and passes
    /// the response through.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        plan: &mut Plan,
        client: &mut DeadlineStream,
        read_ahead: &mut BytesMut,
        scratch: &mut Scratch,
        closing: &(dyn Fn() -> bool + Sync),
        sent: &mut Sent,
    ) -> Result<After, Fail> {
        let mut up = self.connect(&mut plan.ctx).await?;
        let close_up = self.proxy.force_close(&plan.ctx);
        let Scratch {
            up: buf,
            head: out,
            resp,
            timer,
        } = scratch;
        if close_up {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let mut watch = ClientWatch {
            client,
            read_ahead,
            open: true,
            timer,
        };
        let head = loop {
            buf.clear();
            let reply = Reply::new(plan, closing, resp);
            match self
                .send_and_read_head(&mut up, out, buf, &mut watch, reply)
                .await
            {
                // The pooled connection was closed under us: a new one
                // (`dial` marks the request as not reused, so once).
                Err(Fail::Stale) if plan.ctx.reused => up = self.dial(&mut plan.ctx).await?,
                Err(Fail::Stale) => return Err(Fail::Broke),
                r => break r?,
            }
        };
        let ResponseHead {
            len,
            status,
            http10,
            upstream_close,
            mut body,
            close_client,
        } = head;
        sent.status = status;
        buf.advance(len);
        let done = self
            .relay(&mut up, &mut watch, buf, &mut body, resp, sent)
            .await?;
        let reusable = done && !http10 && !upstream_close && !close_up && buf.is_empty();
        if reusable && let Some(key) = pool_key(&plan.ctx) {
            self.pool.put(key, up);
        }
        Ok(if close_client || !done {
            After::Close
        } else {
            After::KeepAlive
        })
    }

    /// An upstream connection: an idle pooled one, else a new one.
    async fn connect(&self, ctx: &mut RequestCtx) -> Result<TcpStream, Fail> {
        if let Some(key) = pool_key(ctx)
            && let Some(s) = self.pool.take(key, self.proxy.peer.idle_timeout)
        {
            ctx.attempts += 1;
            self.proxy.connected(ctx, true);
            return Ok(s);
        }
        self.dial(ctx).await
    }

    /// A new upstream connection, with the connect retry rules the Pingora
    /// path has (`attempt_peer`, `connect_failed`).
    async fn dial(&self, ctx: &mut RequestCtx) -> Result<TcpStream, Fail> {
        loop {
            let peer = match self.proxy.attempt_peer(ctx).await {
                Ok(p) => p,
                Err(e) => {
                    let f = ctx.failure.take();
                    return Err(Fail::Answer(f.unwrap_or_else(|| self.failure_of(&e, ctx))));
                }
            };
            match self.connector.new_stream(&*peer).await {
                Ok(s) => {
                    self.proxy.connected(ctx, false);
                    return into_tcp(s).map_err(|e| {
                        let id = ctx.route.as_ref().map(|r| r.id.as_str());
                        tracing::warn!(sandbox_id = id, port = ctx.port, error = %e, "cannot take over a new upstream connection");
                        Fail::Answer(Failure::Internal)
                    });
                }
                Err(e) => {
                    if !self.proxy.connect_failed(ctx, &e) {
                        return Err(Fail::Answer(self.failure_of(&e, ctx)));
                    }
                }
            }
        }
    }

    fn failure_of(&self, e: &pingora_error::Error, ctx: &RequestCtx) -> Failure {
        self.proxy.classify(e, ctx).unwrap_or(Failure::Internal)
    }

    /// Writes `request` and reads until a complete final response head is
    /// in `buf` (informational responses are passed to the client).
    async fn send_and_read_head(
        &self,
        up: &mut TcpStream,
        request: &[u8],
        buf: &mut BytesMut,
        watch: &mut ClientWatch<'_>,
        mut reply: Reply<'_>,
    ) -> Result<ResponseHead, Fail> {
        if up.write_all(request).await.is_err() || up.flush().await.is_err() {
            return Err(Fail::Stale);
        }
        let timeout = self.proxy.peer.read_timeout;
        // Whether any response byte came: before one, a closed pooled
        // connection is stale (nothing was answered; a new one may retry).
        let mut answered = false;
        loop {
            if !buf.is_empty() {
                match parse_response(buf, Some(&mut reply)) {
                    Ok(Some(head)) if head.status == 101 => return Err(Fail::Broke),
                    Ok(Some(head)) if (100..200).contains(&head.status) => {
                        // Informational: to the client as it is, then the real one.
                        self.write(watch.client, &buf[..head.len], &[])
                            .await
                            .map_err(|_| Fail::ClientGone("client write"))?;
                        buf.advance(head.len);
                        continue;
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) if buf.len() < MAX_RESPONSE_HEAD => {}
                    Ok(None) | Err(()) => return Err(Fail::Broke),
                }
            }
            let stale_or_broke = if answered { Fail::Broke } else { Fail::Stale };
            match watch.read_upstream(up, buf, timeout).await {
                Ok(0) | Err(UpRead::Io) => return Err(stale_or_broke),
                Ok(_) => answered = true,
                Err(UpRead::Client) => return Err(Fail::ClientGone("client closed")),
                Err(UpRead::Timeout) => return Err(Fail::Timeout),
            }
        }
    }

    /// Sends the response head in `out` and the body after it; the body's
    /// first bytes are in `buf`. `Ok(true)`: the body ended where its framing
    /// said, and the upstream connection may be reused.
    async fn relay(
        &self,
        up: &mut TcpStream,
        watch: &mut ClientWatch<'_>,
        buf: &mut BytesMut,
        body: &mut Body,
        out: &mut Vec<u8>,
        sent: &mut Sent,
    ) -> Result<bool, Fail> {
        let mut head: &[u8] = out;
        loop {
            // What of `buf` belongs to the body, and whether it ends there.
            let (take, end) = match body {
                Body::None => (0, true),
                Body::Length(left) => {
                    let take = (*left).min(buf.len() as u64);
                    *left -= take;
                    (take as usize, *left == 0)
                }
                Body::Chunked(c) => match c.feed(buf) {
                    Ok(Some(n)) => (n, true),
                    Ok(None) => (buf.len(), false),
                    Err(_) => return Err(Fail::Abort("malformed chunked body")),
                },
                Body::Close => (buf.len(), false),
            };
            sent.body_bytes += take;
            if !head.is_empty() || take > 0 {
                // The head leaves with the first body bytes.
                self.write(watch.client, head, &buf[..take])
                    .await
                    .map_err(|_| Fail::ClientGone("client write"))?;
                head = &[];
            }
            buf.advance(take);
            if end {
                return Ok(true);
            }
            buf.clear();
            let n = match watch
                .read_upstream(up, buf, self.proxy.peer.read_timeout)
                .await
            {
                Ok(n) => n,
                Err(UpRead::Client) => return Err(Fail::ClientGone("client closed")),
                Err(UpRead::Timeout) => return Err(Fail::Abort("upstream read timed out")),
                Err(UpRead::Io) => return Err(Fail::Abort("upstream read")),
            };
            if n == 0 {
                return match body {
                    Body::Close => Ok(false),
                    _ => Err(Fail::Abort("upstream closed mid-body")),
                };
            }
        }
    }

    /// Writes `a` then `b` to the client within the write timeout (a timer
    /// only when the socket does not take them at once).
    async fn write(&self, client: &mut DeadlineStream, a: &[u8], b: &[u8]) -> io::Result<()> {
        let write = async {
            client.write_all(a).await?;
            client.write_all(b).await?;
            client.flush().await
        };
        let mut write = std::pin::pin!(write);
        if let Some(r) = (&mut write).now_or_never() {
            return r;
        }
        match tokio::time::timeout(self.proxy.write_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

/// The socket of a connection Pingora's connector opened, as a plain tokio
/// `TcpStream`. Pingora's L4 `Stream` times every read and write that waits
/// (two clock reads each) for digests the fast path never reads, behind a
/// trait object. Taking it over costs a `dup` and Pingora's handle closing
/// (its `epoll_ctl` and `close`), once per new upstream connection; the
/// socket, its options and its peer are unchanged.
#[allow(unsafe_code)]
fn into_tcp(stream: Stream) -> io::Result<TcpStream> {
    let l4 = stream
        .into_any()
        .downcast::<L4Stream>()
        .map_err(|_| io::Error::other("not a plain TCP connection"))?;
    // SAFETY: the descriptor is open and owned by `l4`, which outlives the
    // borrow; the duplicate is a new descriptor owned by the result.
    let fd = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) }.try_clone_to_owned()?;
    drop(l4);
    // `from_std` needs a non-blocking socket: the duplicate shares the file
    // status flags of Pingora's (tokio's) descriptor, so it is one already.
    TcpStream::from_std(std::net::TcpStream::from(fd))
}

/// Status and body bytes sent to the client.
#[derive(Debug, Default)]
struct Sent {
    status: u16,
    body_bytes: usize,
}

/// A parsed upstream response head.
#[derive(Debug)]
struct ResponseHead {
    len: usize,
    status: u16,
    http10: bool,
    /// `Connection: close` from the upstream.
    upstream_close: bool,
    body: Body,
    /// The client connection ends after this response.
    close_client: bool,
}

/// What the client's response head needs: written as the upstream's is parsed.
struct Reply<'a> {
    plan: &'a Plan,
    /// Whether the client connection ends after this response.
    closing: &'a (dyn Fn() -> bool + Sync),
    out: &'a mut Vec<u8>,
}

impl<'a> Reply<'a> {
    fn new(plan: &'a Plan, closing: &'a (dyn Fn() -> bool + Sync), out: &'a mut Vec<u8>) -> Self {
        Reply { plan, closing, out }
    }
}

/// Parses an upstream response head and, for a final response with `reply`,
/// writes the client's head to `reply.out`: HTTP/1.1, hop-by-hop headers
/// dropped, `Location` and friends rewritten, `connection: close` when the
/// client connection ends. `Ok(None)`: incomplete; `Err`: malformed.
fn parse_response(buf: &[u8], reply: Option<&mut Reply<'_>>) -> Result<Option<ResponseHead>, ()> {
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
            let n: u64 = std::str::from_utf8(trim(h.value))
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
            te = Some(trim(h.value));
        } else if is("connection") {
            upstream_close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"close"));
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
    status_line(out, resp.code.ok_or(())?, resp.reason);
    let ctx = &plan.ctx;
    let route = ctx.route.as_ref().ok_or(())?;
    let rw = RewriteCtx {
        form: ctx.form.ok_or(())?,
        id: route.id.as_str(),
        port: ctx.port,
        sandbox_addr: route.address,
        public_host: plan.host.as_ref().map(|r| &plan.head[r.clone()]),
    };
    for h in resp.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("connection")
            || is("keep-alive")
            || is("proxy-connection")
            || (chunked && is("content-length"))
        {
            continue;
        }
        let new = rw.header(h.name, h.value);
        push_header(out, h.name, new.as_deref().unwrap_or(h.value));
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Reads from the upstream while watching the client connection.
struct ClientWatch<'a> {
    client: &'a mut DeadlineStream,
    read_ahead: &'a mut BytesMut,
    /// Still watching: the client has sent nothing since the head.
    open: bool,
    timer: &'a mut Option<Pin<Box<Sleep>>>,
}

enum UpRead {
    Client,
    Timeout,
    Io,
}

impl ClientWatch<'_> {
    async fn read_upstream(
        &mut self,
        up: &mut TcpStream,
        buf: &mut BytesMut,
        timeout: Option<Duration>,
    ) -> Result<usize, UpRead> {
        buf.reserve(READ_SIZE);
        let ClientWatch {
            client,
            read_ahead,
            open,
            timer,
        } = self;
        let read = async {
            loop {
                tokio::select! {
                    biased;
                    r = up.read_buf(buf) => return r.map_err(|_| UpRead::Io),
                    r = client.read_buf(*read_ahead), if *open => match r {
                        Ok(0) | Err(_) => return Err(UpRead::Client),
                        // Pipelined: kept for the next request; stop watching.
                        Ok(_) => *open = false,
                    },
                }
            }
        };
        let Some(t) = timeout else {
            return read.await;
        };
        let until = tokio::time::Instant::now() + t;
        let timer = match timer {
            Some(timer) => {
                timer.as_mut().reset(until);
                timer
            }
            None => timer.insert(Box::pin(tokio::time::sleep_until(until))),
        };
        tokio::select! {
            biased;
            r = read => r,
            () = timer.as_mut() => Err(UpRead::Timeout),
        }
    }
}

/// Writes the upstream request head (no final CRLF) to `out`: the client's
/// request line and headers minus hop-by-hop and forwarded ones, then wrenn's.
fn upstream_head(
    req: &httparse::Request<'_, '_>,
    ctx: &RequestCtx,
    edits: UpstreamEdits,
    client_ip: &str,
    out: &mut Vec<u8>,
) {
    out.clear();
    let target = req.path.unwrap_or("/").as_bytes();
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(edits.strip_from.map_or(target, |off| &target[off..]));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = None;
    for h in req.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("host") {
            host = Some(h.value);
            if edits.localhost_host {
                continue;
            }
        } else if is("connection")
            || is("keep-alive")
            || is("proxy-connection")
            || is("x-forwarded-for")
            || is("x-forwarded-host")
            || is("x-forwarded-proto")
            || is("x-forwarded-prefix")
        {
            continue;
        }
        push_header(out, h.name, h.value);
    }
    if edits.localhost_host {
        out.extend_from_slice(b"host: localhost:");
        push_u16(out, ctx.port);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(host) = host {
        push_header(out, "x-forwarded-host", host);
    }
    push_header(out, "x-forwarded-for", client_ip.as_bytes());
    push_header(out, "x-forwarded-proto", b"http");
    if edits.prefix
        && let Some(route) = &ctx.route
    {
        out.extend_from_slice(b"x-forwarded-prefix: ");
        target::push_path_prefix(out, route.id.as_str(), ctx.port);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_u16(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn pool_key(ctx: &RequestCtx) -> Option<u64> {
    ctx.route.as_ref().map(|r| r.pool_key(ctx.port))
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u16(out, status);
    out.push(b' ');
    out.extend_from_slice(reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// The warning Pingora's error line gives for an app that breaks a response.
fn warn_broken(ctx: &RequestCtx, why: &str) {
    let id = ctx.route.as_ref().map(|r| r.id.as_str());
    tracing::warn!(
        sandbox_id = id,
        port = ctx.port,
        "upstream response broken: {why}"
    );
}

/// The failure `make` builds for this request's sandbox and port.
fn upstream_failure(ctx: &RequestCtx, make: fn(String, u16) -> Failure) -> Failure {
    match &ctx.route {
        Some(r) => make(r.id.to_string(), ctx.port),
        None => Failure::Internal,
    }
}

#[cfg(test)]
mod tests;
