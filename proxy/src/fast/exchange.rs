//! One exchange with the upstream: a pooled or new connection (with the
//! pipeline's connect retry), the request, the response head and the body
//! passed through as it arrives, while the client connection is watched.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::FutureExt;
use pingora_core::protocols::Stream;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::response::{Body, Reply, ResponseHead, parse_response};
use super::{After, Client, Fail, FastPath, Plan, Scratch, Sent, pool_key};
use crate::client_stream::ClientStream;
use crate::failure::Failure;
use crate::pipeline::{Fault, RequestCtx};

/// Longest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Bytes read from the upstream at a time.
const READ_SIZE: usize = 16 * 1024;

impl FastPath {
    /// Connects (with the shared retry rules), sends the request and passes
    /// the response through.
    pub(super) async fn exchange(
        &self,
        plan: &mut Plan,
        client: &mut Client<'_>,
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
        } = &mut *client.scratch;
        if close_up {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let mut watch = ClientWatch {
            client: &mut *client.stream,
            read_ahead: &mut *client.read_ahead,
            open: true,
            timer,
        };
        let head = loop {
            buf.clear();
            let reply = Reply {
                plan,
                closing,
                out: resp,
            };
            match self
                .send_and_read_head(&mut up, out, buf, &mut watch, reply)
                .await
            {
                // The pooled connection was closed under us: a new one
                // (`dial` marks the request as not reused, so once).
                Err(Fail::Stale) if plan.ctx.reused => up = self.dial(&mut plan.ctx).await?,
                Err(Fail::Stale) => return Err(Fail::Fault(Fault::Broke)),
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
                    Ok(Some(head)) if head.status == 101 => return Err(Fail::Fault(Fault::Broke)),
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
                    Ok(None) | Err(()) => return Err(Fail::Fault(Fault::Broke)),
                }
            }
            let stale_or_broke = if answered {
                Fail::Fault(Fault::Broke)
            } else {
                Fail::Stale
            };
            match watch.read_upstream(up, buf, timeout).await {
                Ok(0) | Err(UpRead::Io) => return Err(stale_or_broke),
                Ok(_) => answered = true,
                Err(UpRead::Client) => return Err(Fail::ClientGone("client closed")),
                Err(UpRead::Timeout) => return Err(Fail::Fault(Fault::Timeout)),
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
    pub(super) async fn write(
        &self,
        client: &mut ClientStream,
        a: &[u8],
        b: &[u8],
    ) -> io::Result<()> {
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

/// Reads from the upstream while watching the client connection.
struct ClientWatch<'a> {
    client: &'a mut ClientStream,
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
