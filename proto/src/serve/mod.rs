//! A listener for wrenn's servers (the control plane, the host agent): one
//! TCP port serving gRPC and HTTP routes over HTTP/1.1 or HTTP/2, with the
//! timeouts of [`ServerLimits`] and a graceful shutdown.
//!
//! tonic's own server does not let the HTTP/1 header timeout be set, and has
//! no idle timeout, so the connections are served here with hyper directly
//! (as tonic does inside); see `conn.rs` for how the timeouts are kept. A
//! client that connects and sends nothing is closed after the header
//! timeout; a connection with no request in progress is closed (gracefully:
//! HTTP/2 `GOAWAY`) after the idle timeout, whatever PINGs keep it warm.

mod conn;

use std::time::Duration as StdDuration;

/// Default of [`ServerLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// Default of [`ServerLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: StdDuration = StdDuration::from_secs(620);
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL: StdDuration = StdDuration::from_secs(30);
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: StdDuration = StdDuration::from_secs(20);
pub const DEFAULT_SHUTDOWN_GRACE: StdDuration = StdDuration::from_secs(10);
/// How many streams a peer may reset before the server has accepted them,
/// per connection, before hyper ends the connection with `GOAWAY`
/// (`ENHANCE_YOUR_CALM`, "too_many_resets"). hyper's default, 20, guards
/// against the HTTP/2 rapid-reset flood; but the control plane relays every
/// client's PTY, exec and file stream to an agent over one HTTP/2 connection,
/// and when a thousand clients drop at once it resets a thousand relayed
/// streams in a burst, some before the busy agent accepted them. With 20 the
/// agent then closed the connection every other user was on. The bound stays:
/// a flood beyond it still ends the connection.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 4096;

/// Timeouts of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time from accept to the first request reaching the service (HTTP/1
    /// and HTTP/2), and, on HTTP/1, from a later request's first byte to its
    /// complete header.
    pub header_read_timeout: StdDuration,
    /// Time a connection may stay open with no request in progress.
    pub idle_timeout: StdDuration,
    /// HTTP/2: PING interval, and how long an unanswered PING may wait before
    /// the connection is closed.
    pub http2_keepalive_interval: StdDuration,
    pub http2_keepalive_timeout: StdDuration,
    /// After shutdown begins, how long connections may finish.
    pub shutdown_grace: StdDuration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http2_keepalive_interval: DEFAULT_HTTP2_KEEPALIVE_INTERVAL,
            http2_keepalive_timeout: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

pub use conn::TrackedBody;
use conn::{ConnState, Tracked, Verdict, WatchedIo, watch};

/// Accepts and serves connections until `shutdown`; then stops accepting,
/// asks every connection to finish (HTTP/2 GOAWAY, HTTP/1 close after the
/// current response), and after `limits.shutdown_grace` closes the rest.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ServerLimits,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header timeout is kept by `conn::watch`, not by hyper (see conn.rs).
    builder.http1().header_read_timeout(None).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS);

    let tracker = TaskTracker::new();
    let force = CancellationToken::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let state = ConnState::new();
        let io = TokioIo::new(WatchedIo::new(tcp, state.clone()));
        let svc = TowerToHyperService::new(Tracked {
            inner: service.clone(),
            conn: state.clone(),
        });
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let force = force.clone();
        tracker.spawn(async move {
            let conn = builder.serve_connection(io, svc);
            tokio::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.cancelled(), if !draining => {
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    _ = force.cancelled() => break,
                    verdict = watch(&state, limits.header_read_timeout, limits.idle_timeout), if !draining => {
                        match verdict {
                            Verdict::HeaderTimeout => {
                                tracing::debug!(%peer, "closing: request header not received in time");
                                break;
                            }
                            Verdict::Idle => {
                                tracing::debug!(%peer, "closing idle connection");
                                conn.as_mut().graceful_shutdown();
                                draining = true;
                            }
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            grace_secs = limits.shutdown_grace.as_secs(),
            "connections still open after the shutdown grace period; closing them"
        );
        force.cancel();
        tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/2 frame: 9-byte header then the payload.
    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// Reads frames until a GOAWAY (returns its error code) or the
    /// connection stays quiet for a while after a PING answer (returns None).
    async fn goaway_code(tcp: &mut tokio::net::TcpStream) -> Option<u32> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let payload = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                match kind {
                    7 => return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
                    // Our PING's answer: every frame sent before it was read.
                    6 if flags & 1 == 1 => return None,
                    _ => {}
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
                .await
                .expect("the server answers")
                .expect("read");
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A burst of streams reset before the server could accept them, as the
    /// control plane's relay sends when a thousand clients drop together:
    /// hyper's default limit (20) closed the connection for everyone; the
    /// server keeps it open and answers the next request.
    #[tokio::test]
    async fn a_burst_of_reset_streams_does_not_close_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let svc = tower::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        });
        let server = tokio::spawn(serve(
            listener,
            svc,
            ServerLimits::default(),
            shutdown.clone(),
        ));

        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut out, 4, 0, 0, &[]);
        // GET http://x/ from the static table, END_STREAM | END_HEADERS,
        // then RST_STREAM(CANCEL), in one write so the server reads every
        // frame before it accepts any stream.
        let get = [0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
        let resets = 200u32;
        for i in 0..resets {
            let id = 1 + 2 * i;
            frame(&mut out, 1, 0x5, id, &get);
            frame(&mut out, 3, 0, id, &8u32.to_be_bytes());
        }
        frame(&mut out, 6, 0, 0, b"12345678");
        tcp.write_all(&out).await.unwrap();
        assert_eq!(
            goaway_code(&mut tcp).await,
            None,
            "{resets} reset streams closed the connection"
        );

        // The connection still serves: a request on the next stream id.
        let mut next = Vec::new();
        frame(&mut next, 1, 0x5, 1 + 2 * resets, &get);
        tcp.write_all(&next).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let answered = loop {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
                .await
                .expect("the server answers")
                .unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(2).any(|w| w == b"ok") {
                break true;
            }
        };
        assert!(answered);

        drop(tcp);
        shutdown.cancel();
        server.await.unwrap();
    }
}
