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
//! - A transport of the request pipeline (`pipeline/`), as Pingora's hooks
//!   are: routing, the upstream and response edit lists, connect retry,
//!   failures and the access log are the pipeline's; this module reads and
//!   writes bytes.
//! - `listener.rs` reads each request head itself. [`FastPath::plan`]
//!   (`plan.rs`) takes it when it is a bodiless HTTP/1.1 `GET` or `HEAD`
//!   (no `Content-Length`, `Transfer-Encoding`, `Upgrade`, `Expect` or `TE`;
//!   `Connection` at most `keep-alive` or `close`; one `Host`) that the
//!   pipeline routes to a *running* sandbox on an allowed port. Anything
//!   else (bodies, WebSocket upgrades, redirects and every routing error)
//!   is replayed into Pingora's `HttpProxy` unchanged.
//! - The exchange (`exchange.rs`): new upstream connections are dialled by
//!   Pingora's `TransportConnector` with the same peers as the Pingora path
//!   (timeouts, the netns dialer), then used as plain tokio sockets
//!   (`into_tcp`), as client connections are (`ClientStream`): Pingora's
//!   L4 stream reads the clock around every read and write that waits. Idle
//!   ones wait in a pool per proxy thread (`pool.rs`) keyed by the peer's
//!   `reuse_hash`, so per sandbox generation and port.
//! - The response head (`response.rs`) is parsed (httparse) and rewritten;
//!   the body is passed through as it arrives: `Content-Length`, chunked
//!   (followed by `chunked.rs`, sent as is) or, without either, until the
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
mod exchange;
mod plan;
mod pool;
mod response;

pub(crate) use plan::Plan;

use std::ops::Range;
use std::pin::Pin;

use bytes::BytesMut;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::client_stream::ClientStream;
use crate::failure::Failure;
use crate::pipeline::{Fault, Finished, RequestCtx, WrennProxy};
use pool::Pool;

/// Headers parsed per request head; a head with more goes to Pingora (up to
/// `MAX_REQUEST_HEADER_FIELDS`, which `listener.rs` enforces).
pub(crate) const REQUEST_HEADERS: usize = 64;

/// The fast path of one proxy thread.
pub(crate) struct FastPath {
    proxy: WrennProxy,
    /// Dials new upstream connections (the peer's timeouts, the netns dialer).
    connector: TransportConnector,
    pool: Pool,
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

/// The client connection a planned request is served on, as the listener
/// lends it.
pub(crate) struct Client<'a> {
    pub stream: &'a mut ClientStream,
    /// Client bytes read and not yet served: what the client sends while
    /// its request is served (a pipelined request) is appended.
    pub read_ahead: &'a mut BytesMut,
    /// The buffers `plan` wrote to.
    pub scratch: &'a mut Scratch,
    /// The connection ends after this request anyway (its request cap).
    pub last: bool,
    /// The proxy is shutting down once this reads true: the response
    /// started after it closes the connection.
    pub shutdown: &'a watch::Receiver<bool>,
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
    /// Before any response byte: an upstream fault to answer for.
    Fault(Fault),
    /// A pooled connection was closed before any response byte: try a new one.
    Stale,
    /// The app broke the response after its head went out: close.
    Abort(&'static str),
    /// The client left or stopped reading: close.
    ClientGone(&'static str),
}

/// Status and body bytes sent to the client.
#[derive(Debug, Default)]
struct Sent {
    status: u16,
    body_bytes: usize,
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

    /// Serves a planned request on `client`, whose scratch `plan` wrote.
    pub(crate) async fn serve(&self, mut plan: Plan, mut client: Client<'_>) -> After {
        self.proxy.metrics.fast_path.inc();
        let last = client.last || plan.client_close;
        let shutdown = client.shutdown;
        let closing = || last || *shutdown.borrow();
        let mut sent = Sent::default();
        let result = self
            .exchange(&mut plan, &mut client, &closing, &mut sent)
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
                    Fail::Fault(fault) => {
                        if fault == Fault::Broke {
                            warn_broken(&plan.ctx, "before its head ended");
                        }
                        p.failure_for(fault, &plan.ctx)
                    }
                    // `Stale` never leaves `exchange` (a retry or `Broke`).
                    _ => Failure::Internal,
                };
                let out = f.to_wire(plan.html, plan.head_only);
                sent.status = f.status();
                plan.ctx.failure = Some(f);
                let _ = self.write(client.stream, &out, &[]).await;
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
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn pool_key(ctx: &RequestCtx) -> Option<u64> {
    ctx.route.as_ref().map(|r| r.pool_key(ctx.port))
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

#[cfg(test)]
mod tests;
