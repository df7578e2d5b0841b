//! wrenn's own accept loop and HTTP/1.1 keep-alive loop around Pingora's
//! `HttpProxy`, so each connection gets the header deadline (`deadline.rs`),
//! wrenn's idle and request limits, and is counted for graceful shutdown.
//!
//! # Limitations
//! Plain HTTP/1.x only: no TLS (terminate it in front of the proxy) and no
//! prior-knowledge h2c (browsers never use it).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, TcpKeepalive};
use pingora_proxy::HttpProxy;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::deadline::{ConnState, DeadlineStream};
use crate::metrics::Metrics;
use crate::service::WrennProxy;

pub(crate) type App = HttpProxy<WrennProxy>;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    pub header_timeout: Duration,
    pub keepalive_idle_secs: u64,
    pub keepalive_requests: u32,
}

/// Counts open client connections so shutdown can wait for them.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    open: AtomicUsize,
    drained: Notify,
}

impl Tracker {
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct Tracked {
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
}

impl Tracked {
    fn new(tracker: Arc<Tracker>, metrics: Arc<Metrics>) -> Self {
        tracker.open.fetch_add(1, Ordering::AcqRel);
        metrics.client_connections.inc();
        metrics.client_connections_total.inc();
        Tracked { tracker, metrics }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.metrics.client_connections.dec();
        if self.tracker.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.drained.notify_waiters();
        }
    }
}

/// Accepts connections until `shutdown` turns true, then drops the listener.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    settings: Arc<ConnSettings>,
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let tracked = Tracked::new(tracker.clone(), metrics.clone());
                    let (app, settings, metrics, shutdown) =
                        (app.clone(), settings.clone(), metrics.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        serve(tcp, peer, app, &settings, &metrics, shutdown).await;
                        drop(tracked);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Resolves once `rx` reads true (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves one client connection: HTTP/1.1 requests until it closes, idles
/// out, reaches its request limit, misses a header deadline or the proxy shuts down.
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    settings: &ConnSettings,
    metrics: &Metrics,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    let mut l4 = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest.peer_addr.set(Some(peer.into()));
    l4.set_socket_digest(digest);
    // Finds clients that vanished without a FIN (idle WebSockets included).
    let _ = l4.set_keepalive(&TcpKeepalive {
        idle: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        count: 6,
        #[cfg(target_os = "linux")]
        user_timeout: Duration::ZERO,
    });

    let conn = Arc::new(ConnState::new(settings.header_timeout));
    conn.arm();
    let mut session = ServerSession::new_http1(Box::new(DeadlineStream::new(l4, conn.clone())));
    session.set_keepalive(Some(settings.keepalive_idle_secs));
    // Pingora counts reuses: the first request is not one.
    session.set_keepalive_reuses_remaining(Some(settings.keepalive_requests.saturating_sub(1)));
    loop {
        // Delivered to the proxy's `on_connection_reuse`, which stops the deadline.
        session.set_connection_user_context(Some(Box::new(conn.clone())));
        let reused = tokio::select! {
            biased;
            r = app.process_new_http(session, &shutdown) => r,
            // Counted before the select drops (closes) the connection.
            () = async { conn.expired().await; metrics.header_timeouts.inc(); } => {
                tracing::debug!(client = %peer, "request headers not received in time; closing");
                return;
            }
        };
        let Some(reused) = reused else { return };
        if *shutdown.borrow() {
            return;
        }
        let (stream, persistent) = reused.consume();
        session = ServerSession::new_http1(stream);
        if let Some(p) = persistent {
            p.apply_to_session(&mut session);
        }
        conn.idle();
    }
}
