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
        .keep_alive_timeout(limits.http2_keepalive_timeout);

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
