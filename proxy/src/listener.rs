//! wrenn's own accept loop and HTTP/1.1 keep-alive loop around Pingora's
//! `HttpProxy`, so each connection gets a header deadline (Pingora limits
//! each read, not the whole head: a client sending a byte a second would
//! hold a connection forever), wrenn's idle and request limits, and is
//! counted for graceful shutdown.
//!
//! The loop reads every request head itself, under the header deadline (one
//! timer per connection, [`Conn::read_head`]) and the head limits
//! (`head.rs`: 64 KiB, 256 fields, else it answers 431 and closes; bytes
//! that cannot start an HTTP/1.x head get 400 and a close). The fast path
//! (`fast/`, when on) serves what it takes and the rest is replayed into
//! `HttpProxy` whole, one request at a time, on the same connection, so
//! Pingora never waits for a head. With the fast path off, every request is
//! replayed.
//!
//! # Limitations
//! Plain HTTP/1.x only: no TLS (terminate it in front of the proxy) and no
//! prior-knowledge h2c (browsers never use it).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::ext::set_tcp_keepalive;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, TcpKeepalive};
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Sleep;

use crate::client_stream::ClientStream;
use crate::failure::{Failure, HeadLimit};
use crate::fast::{After, Client, FastPath, Scratch};
use crate::head::{Partial, head_len, over_length, too_many_fields};
use crate::metrics::Metrics;
use crate::pipeline::{Finished, RequestCtx, WrennProxy};

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
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    logic: Arc<WrennProxy>,
    fast: Option<Arc<FastPath>>,
    settings: Arc<ConnSettings>,
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    shutdown_global: watch::Receiver<bool>,
) {
    if let Some(fast) = &fast {
        let fast = fast.clone();
        // Ends with the thread's runtime.
        tokio::spawn(async move { fast.sweep_idle().await });
    }
    // Connections watch a copy of the shutdown signal that belongs to this
    // thread: the global channel's lock and wait list are shared by every
    // proxy thread, and every request and idle wait touches them.
    let (local_tx, shutdown) = watch::channel(*shutdown_global.borrow());
    let mut global = shutdown_global;
    tokio::spawn(async move {
        stopped(&mut global).await;
        let _ = local_tx.send(true);
    });
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let tracked = Tracked::new(tracker.clone(), metrics.clone());
                    let (app, logic, fast, settings, metrics, shutdown) = (
                        app.clone(),
                        logic.clone(),
                        fast.clone(),
                        settings.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    );
                    tokio::spawn(async move {
                        let paths = Paths { app: &app, logic: &logic, fast: fast.as_deref() };
                        serve(tcp, peer, paths, &settings, &metrics, shutdown).await;
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

/// What serves the requests of a connection.
#[derive(Clone, Copy)]
struct Paths<'a> {
    app: &'a Arc<App>,
    /// The proxy logic, for what the listener answers itself (431).
    logic: &'a WrennProxy,
    fast: Option<&'a FastPath>,
}

/// Serves one client connection: HTTP/1.1 requests until it closes, idles
/// out, reaches its request limit, misses a header deadline, sends a head
/// over the limits or the proxy shuts down. Each request goes to the fast
/// path when it takes it, else to Pingora's `HttpProxy`.
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    paths: Paths<'_>,
    settings: &ConnSettings,
    metrics: &Metrics,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    // Finds clients that vanished without a FIN (idle WebSockets included).
    let _ = set_tcp_keepalive(
        &tcp,
        &TcpKeepalive {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            count: 6,
            #[cfg(target_os = "linux")]
            user_timeout: Duration::ZERO,
        },
    );
    let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));

    let mut stream = Box::new(ClientStream::new(tcp));
    stream.set_socket_digest(digest);
    let deadline = Instant::now() + settings.header_timeout;
    let mut c = Conn {
        peer,
        peer_ip: peer.ip().to_string(),
        app: paths.app,
        logic: paths.logic,
        fast: paths.fast,
        settings,
        metrics,
        shutdown,
        read_ahead: BytesMut::new(),
        scratch: Scratch::default(),
        served: 0,
        deadline,
        timer: Box::pin(tokio::time::sleep_until(deadline.into())),
    };
    loop {
        let Some(next) = c.one_request(stream).await else {
            return;
        };
        stream = next;
        c.served += 1;
        if c.served >= settings.keepalive_requests || *c.shutdown.borrow() {
            return;
        }
    }
}

/// One client connection between requests.
struct Conn<'a> {
    peer: SocketAddr,
    /// For `X-Forwarded-For`, formatted once.
    peer_ip: String,
    app: &'a Arc<App>,
    logic: &'a WrennProxy,
    fast: Option<&'a FastPath>,
    settings: &'a ConnSettings,
    metrics: &'a Metrics,
    /// This thread's copy of the shutdown signal.
    shutdown: watch::Receiver<bool>,
    /// Client bytes read and not yet served.
    read_ahead: BytesMut,
    scratch: Scratch,
    served: u32,
    /// When the current request's head must be in.
    deadline: Instant,
    /// The wait for the next request's head. One per connection,
    /// moved later for each request: tokio extends a registered timer's
    /// deadline with a compare-and-swap, where a new timer per request went
    /// into the runtime's timer wheel and out again.
    timer: Pin<Box<Sleep>>,
}

impl Conn<'_> {
    /// Serves the next request on the fast path when it takes it, else on
    /// Pingora; `None` when the connection is done.
    async fn one_request(&mut self, mut stream: Box<ClientStream>) -> Option<Box<ClientStream>> {
        let head = match self.read_head(&mut stream).await {
            Head::Done => return None,
            Head::TimedOut => return self.header_timed_out(),
            Head::TooLarge(limit) => {
                let failure = Failure::HeadersTooLarge { limit };
                return self.refuse_head(stream, failure).await;
            }
            Head::NotHttp => return self.refuse_head(stream, not_http()).await,
            Head::Complete(n) => self.read_ahead.split_to(n).freeze(),
        };
        let planned = self
            .fast
            .and_then(|fast| Some((fast, fast.plan(&head, &self.peer_ip, &mut self.scratch)?)));
        if let Some((fast, plan)) = planned {
            let client = Client {
                stream: &mut stream,
                read_ahead: &mut self.read_ahead,
                scratch: &mut self.scratch,
                last: self.served.saturating_add(1) >= self.settings.keepalive_requests,
                shutdown: &self.shutdown,
            };
            return match fast.serve(plan, client).await {
                After::KeepAlive => Some(stream),
                After::Close => None,
            };
        }
        // The fast path takes at most 64 fields; Pingora's own limit is
        // answered like the length limit, not with its bare 400.
        if too_many_fields(&head) {
            self.read_ahead = BytesMut::from(&head[..]);
            let limit = HeadLimit::Fields;
            return self
                .refuse_head(stream, Failure::HeadersTooLarge { limit })
                .await;
        }
        // The head is all there (no deadline left to keep); Pingora reads
        // it first, then what was read ahead.
        stream.replay(self.read_ahead.split().freeze());
        stream.replay(head);
        self.pingora(stream).await
    }

    /// Answers a head the proxy refuses to read on (431 over a limit, 400
    /// not HTTP) with `failure` (HTML or JSON as the head's `Accept` asks, as
    /// far as it came), counts and logs it like any request, and closes the
    /// connection: the rest of the head is read and dropped for a moment
    /// first, so the client sees the answer rather than a reset.
    async fn refuse_head(
        &mut self,
        mut stream: Box<ClientStream>,
        failure: Failure,
    ) -> Option<Box<ClientStream>> {
        let status = failure.status();
        let partial = Partial::read(&self.read_ahead);
        let wire = failure.to_wire(partial.html, partial.head_only);
        let mut ctx = RequestCtx::new();
        tracing::debug!(client = %self.peer, code = failure.code(), "request head refused; answered {status}");
        ctx.failure = Some(failure);
        let log = Finished {
            status,
            bytes_in: 0,
            bytes_out: 0,
            method: partial.method,
            path: partial.path,
            error: None,
        };
        self.logic.finished(&ctx, &log);
        self.read_ahead = BytesMut::new();
        let answer = async {
            stream.write_all(&wire).await?;
            stream.shutdown().await
        };
        if tokio::time::timeout(LINGER, answer).await.is_ok() {
            linger(&mut stream).await;
        }
        None
    }

    /// Counts a missed header deadline; the connection closes.
    fn header_timed_out(&self) -> Option<Box<ClientStream>> {
        self.metrics.header_timeouts.inc();
        tracing::debug!(client = %self.peer, "request headers not received in time; closing");
        None
    }

    /// Serves one request on Pingora's `HttpProxy`.
    async fn pingora(&self, stream: Box<ClientStream>) -> Option<Box<ClientStream>> {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(Some(self.settings.keepalive_idle_secs));
        // Pingora counts reuses: the request it serves now is not one.
        let left = self
            .settings
            .keepalive_requests
            .saturating_sub(self.served + 1);
        session.set_keepalive_reuses_remaining(Some(left));
        let reused = self.app.process_new_http(session, &self.shutdown).await?;
        let (stream, _persistent) = reused.consume();
        stream.into_any().downcast::<ClientStream>().ok()
    }

    /// Reads until `read_ahead` starts with a complete request head, within
    /// the header deadline: from accept for the first request, from the first
    /// byte for later ones, which may idle `keepalive_idle_secs` before it.
    async fn read_head(&mut self, stream: &mut ClientStream) -> Head {
        let buf = &mut self.read_ahead;
        let mut started = self.served == 0;
        let idle = Duration::from_secs(self.settings.keepalive_idle_secs);
        loop {
            if !buf.is_empty() {
                if !started {
                    started = true;
                    self.deadline = Instant::now() + self.settings.header_timeout;
                }
                match head_len(buf) {
                    Ok(Some(n)) => match over_length(n, true) {
                        Some(limit) => return Head::TooLarge(limit),
                        None => return Head::Complete(n),
                    },
                    Ok(None) => {
                        if let Some(limit) = over_length(buf.len(), false) {
                            return Head::TooLarge(limit);
                        }
                    }
                    Err(()) => return Head::NotHttp,
                }
            }
            buf.reserve(4096);
            // The header deadline once the head has started, else the idle
            // limit before it.
            let until = if started {
                self.deadline
            } else {
                Instant::now() + idle
            };
            self.timer.as_mut().reset(until.into());
            let n = if buf.is_empty() {
                // Between requests (or before the first byte): the proxy
                // shutting down ends the connection.
                tokio::select! {
                    biased;
                    r = stream.read_buf(buf) => r,
                    () = stopped(&mut self.shutdown) => return Head::Done,
                    () = self.timer.as_mut() => return if started { Head::TimedOut } else { Head::Done },
                }
            } else {
                tokio::select! {
                    biased;
                    r = stream.read_buf(buf) => r,
                    () = self.timer.as_mut() => return Head::TimedOut,
                }
            };
            match n {
                Ok(0) | Err(_) => return Head::Done,
                Ok(_) => {}
            }
        }
    }
}

/// How reading a request head ended.
enum Head {
    /// `read_ahead[..n]` is a complete head.
    Complete(usize),
    /// Not an HTTP/1.x request head: answered 400 here.
    NotHttp,
    /// Over a limit: answered 431 here.
    TooLarge(HeadLimit),
    /// The header deadline passed.
    TimedOut,
    /// Closed, idle too long, or the proxy is shutting down.
    Done,
}

/// How long a refused client gets to take its answer and stop sending.
const LINGER: Duration = Duration::from_secs(2);
/// The most a refused client may still send before its connection is reset.
const LINGER_BYTES: usize = 1 << 20;

/// Reads and drops what the client still sends, until it closes, for up to
/// [`LINGER`] and [`LINGER_BYTES`]: closing a socket with unread bytes
/// resets the connection, and a reset can cost the client the answer it has
/// not read yet (nginx's `lingering_close`).
async fn linger(stream: &mut ClientStream) {
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The answer to bytes that cannot start an HTTP/1.x request head (a TLS
/// handshake, HTTP/2 without upgrade, garbage).
fn not_http() -> Failure {
    Failure::BadRequest {
        message: "the request is not HTTP/1.x (this proxy speaks plain HTTP/1.1)".into(),
        sandbox_id: None,
        port: None,
    }
}
