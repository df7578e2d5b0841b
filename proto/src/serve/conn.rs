//! Per-connection bookkeeping for the header-read and idle timeouts.
//!
//! hyper's own HTTP/1 header timeout restarts the moment a response is done,
//! so on a keep-alive connection it doubles as a 10 s idle timeout, and its
//! HTTP/2 server has neither. wrenn wants the two apart (10 s to send a
//! request, 620 s with none in progress), for both protocols, so the
//! connection's socket is wrapped ([`WatchedIo`]) to see bytes arrive, the
//! service is wrapped ([`Tracked`]) to see requests start and finish, and
//! [`watch`] turns that into a verdict.
//!
//! - Header timeout: from accept until the first request reaches the
//!   service; on HTTP/1 also from the first byte read while no request is in
//!   progress until that request reaches the service. (An HTTP/2 request
//!   arrives as one HEADERS frame: after the first, there is no partial
//!   header to time.)
//! - Idle timeout: no request in progress since the last one ended (or since
//!   accept). A request stays in progress until its response body is done,
//!   so a quiet stream (a PTY) keeps its connection; HTTP/2 PINGs do not.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::Service;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of the preface that tell HTTP/2 from any HTTP/1 method.
const PREFACE_DECIDES: usize = 4;

const PROTO_UNKNOWN: u8 = 0;
const PROTO_H1: u8 = 1;
const PROTO_H2: u8 = 2;
/// `head_started` value meaning "no request head in progress".
const NO_HEAD: u64 = u64::MAX;

/// What one connection has been doing, in milliseconds since accept.
#[derive(Debug)]
pub(crate) struct ConnState {
    start: Instant,
    /// When the last request ended (0: none yet).
    idle_since: AtomicU64,
    head_started: AtomicU64,
    active: AtomicUsize,
    requests: AtomicU64,
    proto: AtomicU8,
    preface_seen: Mutex<usize>,
    notify: Notify,
}

impl ConnState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnState {
            start: Instant::now(),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            proto: AtomicU8::new(PROTO_UNKNOWN),
            preface_seen: Mutex::new(0),
            notify: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.start
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX - 1)
    }

    pub(crate) fn is_http2(&self) -> bool {
        self.proto.load(Ordering::Acquire) == PROTO_H2
    }

    fn on_read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut proto = self.proto.load(Ordering::Acquire);
        if proto == PROTO_UNKNOWN {
            proto = self.sniff(bytes);
        }
        if proto != PROTO_H2
            && self.active.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(NO_HEAD, self.now(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.notify.notify_one();
        }
    }

    /// Compares the first bytes with the HTTP/2 preface; returns the protocol
    /// once decided.
    fn sniff(&self, bytes: &[u8]) -> u8 {
        let mut seen = self.preface_seen.lock().unwrap_or_else(|p| p.into_inner());
        let want = &H2_PREFACE[*seen..PREFACE_DECIDES];
        let n = want.len().min(bytes.len());
        let decided = if bytes[..n] != want[..n] {
            PROTO_H1
        } else if *seen + n >= PREFACE_DECIDES {
            PROTO_H2
        } else {
            *seen += n;
            return PROTO_UNKNOWN;
        };
        self.proto.store(decided, Ordering::Release);
        if decided == PROTO_H2 {
            self.head_started.store(NO_HEAD, Ordering::Release);
            self.notify.notify_one();
        }
        decided
    }

    /// A request reached the service: its head is complete.
    fn request_started(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        self.notify.notify_one();
        ActiveGuard(self.clone())
    }
}

/// Why a connection should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Close now: a request did not arrive in time.
    HeaderTimeout,
    /// Close gracefully: no request for the idle timeout.
    Idle,
}

/// Resolves when the connection has broken one of its timeouts.
pub(crate) async fn watch(
    conn: &ConnState,
    header_timeout: Duration,
    idle_timeout: Duration,
) -> Verdict {
    let header_ms = u64::try_from(header_timeout.as_millis()).unwrap_or(u64::MAX / 2);
    let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX / 2);
    loop {
        let notified = conn.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = conn.now();
        let mut deadline = u64::MAX;
        let first = conn.requests.load(Ordering::Acquire) == 0;
        let head = conn.head_started.load(Ordering::Acquire);
        // The first request, on either protocol, and a later HTTP/1 head.
        let header_clock = if first && conn.is_http2() {
            Some(0)
        } else {
            (head != NO_HEAD).then_some(head)
        };
        if let Some(t) = header_clock {
            let d = t.saturating_add(header_ms);
            if now >= d {
                return Verdict::HeaderTimeout;
            }
            deadline = deadline.min(d);
        } else if conn.active.load(Ordering::Acquire) == 0 {
            let d = conn
                .idle_since
                .load(Ordering::Acquire)
                .saturating_add(idle_ms);
            if now >= d {
                return Verdict::Idle;
            }
            deadline = deadline.min(d);
        }
        if deadline == u64::MAX {
            notified.await;
        } else {
            let sleep = tokio::time::sleep(Duration::from_millis(deadline - now));
            tokio::select! {
                _ = sleep => {}
                _ = notified => {}
            }
        }
    }
}

/// Marks a request in progress until the response body is dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<ConnState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(c.now(), Ordering::Release);
        c.active.fetch_sub(1, Ordering::AcqRel);
        c.notify.notify_one();
    }
}

/// A socket that reports what it reads to a [`ConnState`].
#[derive(Debug)]
pub(crate) struct WatchedIo<T> {
    inner: T,
    conn: Arc<ConnState>,
}

impl<T> WatchedIo<T> {
    pub(crate) fn new(inner: T, conn: Arc<ConnState>) -> Self {
        WatchedIo { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            self.conn.on_read(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A service that marks each request in progress on its [`ConnState`] until
/// its response body is done.
#[derive(Debug, Clone)]
pub(crate) struct Tracked<S> {
    pub(crate) inner: S,
    pub(crate) conn: Arc<ConnState>,
}

impl<S, Req, B> Service<Request<Req>> for Tracked<S>
where
    S: Service<Request<Req>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Req>) -> Self::Future {
        let guard = self.conn.request_started();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request "in progress" until dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _guard: ActiveGuard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_http2_preface_even_split() {
        let c = ConnState::new();
        c.on_read(b"PR");
        assert_eq!(c.proto.load(Ordering::Acquire), PROTO_UNKNOWN);
        c.on_read(b"I * HTTP/2.0");
        assert!(c.is_http2());
        assert_eq!(c.head_started.load(Ordering::Acquire), NO_HEAD);

        for h1 in [&b"POST / HTTP/1.1\r\n"[..], b"PUT /", b"GET /", b"PATCH /"] {
            let c = ConnState::new();
            c.on_read(h1);
            assert_eq!(c.proto.load(Ordering::Acquire), PROTO_H1, "{h1:?}");
        }
    }

    #[test]
    fn a_request_clears_the_header_clock_until_it_is_done() {
        let c = ConnState::new();
        c.on_read(b"GET / HTTP/1.1\r\n\r\n");
        let guard = c.request_started();
        assert_eq!(c.head_started.load(Ordering::Acquire), NO_HEAD);
        c.on_read(b"body bytes");
        assert_eq!(
            c.head_started.load(Ordering::Acquire),
            NO_HEAD,
            "body bytes are no header"
        );
        drop(guard);
        c.on_read(b"GET /next");
        assert_ne!(c.head_started.load(Ordering::Acquire), NO_HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_follow_the_two_clocks() {
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(620));
        // Nothing sent after accept: header timeout.
        let c = ConnState::new();
        assert_eq!(watch(&c, header, idle).await, Verdict::HeaderTimeout);

        // A finished request, then quiet: idle timeout, not header timeout.
        let c = ConnState::new();
        c.on_read(b"GET / HTTP/1.1\r\n\r\n");
        drop(c.request_started());
        let t0 = tokio::time::Instant::now();
        assert_eq!(watch(&c, header, idle).await, Verdict::Idle);
        assert!(
            t0.elapsed() >= Duration::from_secs(619),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_gets_both_clocks_and_pings_do_not_count() {
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(620));
        // A preface and settings, then no request: closed at the header timeout.
        let c = ConnState::new();
        c.on_read(H2_PREFACE);
        c.on_read(b"\0\0\0\x04\0\0\0\0\0");
        let t0 = tokio::time::Instant::now();
        assert_eq!(watch(&c, header, idle).await, Verdict::HeaderTimeout);
        assert!(t0.elapsed() <= Duration::from_secs(10));

        // A stream open for longer than the idle timeout keeps the
        // connection; once it ends, frames (PINGs) do not.
        let c = ConnState::new();
        c.on_read(H2_PREFACE);
        let stream = c.request_started();
        let waiting =
            tokio::time::timeout(Duration::from_secs(3600), watch(&c, header, idle)).await;
        assert!(waiting.is_err(), "an open stream is not idle: {waiting:?}");
        drop(stream);
        let t0 = tokio::time::Instant::now();
        let watching = watch(&c, header, idle);
        tokio::pin!(watching);
        for _ in 0..30 {
            tokio::select! {
                v = &mut watching => panic!("too early: {v:?}"),
                _ = tokio::time::sleep(Duration::from_secs(20)) => c.on_read(b"\0\0\x08\x06\0\0\0\0\0ping...."),
            }
        }
        assert_eq!(watching.await, Verdict::Idle);
        assert!(
            t0.elapsed() >= Duration::from_secs(619),
            "{:?}",
            t0.elapsed()
        );
    }
}
