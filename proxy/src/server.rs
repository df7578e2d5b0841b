//! Starting and stopping a proxy instance on its own runtime and threads.
//!
//! # Design
//! The proxy runs Pingora's `HttpProxy` on a dedicated multi-threaded tokio
//! runtime (`threads` workers, named `wrenn-proxy`), fed by wrenn's own
//! accept loop (`listener.rs`). Pingora's `Server` is not used: it sleeps
//! its whole grace period even when idle, handles signals itself and can
//! `exit` the process. Here shutdown is: stop accepting, wake idle keep-alive
//! connections so they close, wait until the open connections drain or the
//! grace period ends, then drop what is left.
//!
//! The route watcher and the admin listener run on the same runtime; the
//! watcher's tonic channel is its own (no proxied bytes on it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_core::apps::HttpServerApp;
use pingora_core::server::configuration::ServerConf;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::admin::{Admin, serve_admin};
use crate::config::{ConfigError, ProxyConfig};
use crate::connect::UpstreamConnector;
use crate::listener::{App, ConnSettings, Tracker, accept_loop};
use crate::metrics::{Metrics, MetricsError};
use crate::routes::RouteTable;
use crate::service::WrennProxy;
use crate::watch::{WatchError, WatchSettings, agent_channel, watch_agent};

const LISTEN_BACKLOG: u32 = 4096;

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("building the proxy runtime with {threads} worker threads")]
    Runtime {
        threads: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("binding the {what} listener on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// Builds a proxy instance. `Proxy::new(config).start()` is the usual path;
/// the connector and a static route table can be swapped in first.
pub struct Proxy {
    config: ProxyConfig,
    /// `None`: the one `upstream_connect` names.
    connector: Option<Arc<dyn UpstreamConnector>>,
    static_routes: Option<Arc<RouteTable>>,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Self {
        Proxy {
            config,
            connector: None,
            static_routes: None,
        }
    }

    /// Replaces the connector `upstream_connect` names.
    pub fn connector(mut self, connector: impl UpstreamConnector) -> Self {
        self.connector = Some(Arc::new(connector));
        self
    }

    /// Serves routes from `table`, filled by the caller, instead of watching
    /// the agent (benchmarks, embedding).
    pub fn static_routes(mut self, table: Arc<RouteTable>) -> Self {
        self.static_routes = Some(table);
        self
    }

    /// Binds the listeners and starts serving on the proxy's own threads.
    pub fn start(self) -> Result<ProxyHandle, ProxyError> {
        let c = self.config;
        c.validate()?;
        let connector = match self.connector {
            Some(connector) => connector,
            None => crate::connect::from_config(&c)?,
        };
        crate::bridge_pingora_logs();
        raise_fd_limit();
        let threads = c.worker_threads();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wrenn-proxy")
            .enable_all()
            .build()
            .map_err(|source| ProxyError::Runtime { threads, source })?;
        let _enter = runtime.enter();

        let listener = bind("proxy", c.listen)?;
        let listen = listener.local_addr().map_err(|source| ProxyError::Bind {
            what: "proxy",
            addr: c.listen,
            source,
        })?;
        let admin_listener = c.admin_listen.map(|a| bind("admin", a)).transpose()?;
        let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

        let watching = self.static_routes.is_none();
        let routes = self.static_routes.unwrap_or_default();
        let metrics = Metrics::new(routes.clone())?;
        let channel = if watching {
            Some(agent_channel(&c.agent)?)
        } else {
            None
        };

        // Total attempts per request: connect attempts plus room for one
        // stale-pooled-connection retry (`error_while_proxy`).
        let conf = Arc::new(ServerConf {
            threads,
            max_retries: c.connect_attempts as usize + 2,
            upstream_keepalive_pool_size: c.pool_size.div_ceil(threads),
            ..ServerConf::default()
        });
        let logic = WrennProxy::new(&c, routes.clone(), metrics.clone(), connector);
        let app: Arc<App> = Arc::new(pingora_proxy::http_proxy(&conf, logic));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = Arc::new(Tracker::default());
        let settings = Arc::new(ConnSettings {
            header_timeout: c.header_timeout(),
            keepalive_idle_secs: c.keepalive_idle_secs,
            keepalive_requests: c.keepalive_requests,
        });
        runtime.spawn(accept_loop(
            listener,
            app.clone(),
            settings,
            tracker.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        ));
        if let Some(l) = admin_listener {
            let admin = Admin {
                metrics: metrics.clone(),
                routes: routes.clone(),
            };
            runtime.spawn(serve_admin(l, admin, shutdown_rx.clone()));
        }
        if let Some(channel) = channel {
            let ws = WatchSettings {
                agent: c.agent.clone(),
                backoff: Duration::from_millis(c.watch_backoff_ms),
                backoff_max: Duration::from_millis(c.watch_backoff_max_ms),
            };
            runtime.spawn(watch_agent(
                channel,
                ws,
                routes.clone(),
                metrics.clone(),
                shutdown_rx,
            ));
        }
        tracing::info!(%listen, admin = ?admin, threads, domain = %c.domain, agent = %c.agent, "proxy listening");
        drop(_enter);
        Ok(ProxyHandle {
            runtime: Some(runtime),
            shutdown,
            app,
            tracker,
            listen,
            admin,
            routes,
            metrics,
            grace: c.grace_period(),
        })
    }
}

/// A running proxy. Dropping it stops the proxy at once; [`ProxyHandle::shutdown`]
/// stops it gracefully.
pub struct ProxyHandle {
    runtime: Option<Runtime>,
    shutdown: watch::Sender<bool>,
    app: Arc<App>,
    tracker: Arc<Tracker>,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    routes: Arc<RouteTable>,
    metrics: Arc<Metrics>,
    grace: Duration,
}

/// How a graceful shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every client connection closed within the grace period.
    pub drained: bool,
    /// Connections still open when the grace period ended (dropped).
    pub dropped: usize,
    pub took: Duration,
}

impl ProxyHandle {
    /// The bound proxy address (the real port when configured with port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Open client connections.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// Starts the drain on the proxy's runtime; the receiver gets the outcome.
    fn begin_shutdown(&mut self) -> Option<(Runtime, tokio::sync::oneshot::Receiver<bool>)> {
        let runtime = self.runtime.take()?;
        let _ = self.shutdown.send(true);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (app, tracker, grace) = (self.app.clone(), self.tracker.clone(), self.grace);
        runtime.spawn(async move {
            // Wakes keep-alive connections idling in a header read so they close.
            app.http_cleanup().await;
            let drained = tokio::time::timeout(grace, tracker.drained()).await.is_ok();
            let _ = tx.send(drained);
        });
        Some((runtime, rx))
    }

    fn report(&self, drained: bool, started: Instant) -> ShutdownReport {
        let dropped = if drained { 0 } else { self.tracker.open() };
        let report = ShutdownReport {
            drained,
            dropped,
            took: started.elapsed(),
        };
        tracing::info!(
            drained,
            dropped,
            took_ms = report.took.as_millis() as u64,
            "proxy stopped"
        );
        report
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish for up
    /// to the grace period, then stop every thread. Blocks; call it from a
    /// plain thread, not from an async task (see [`Self::shutdown_async`]).
    pub fn shutdown(mut self) -> ShutdownReport {
        let started = Instant::now();
        let Some((runtime, rx)) = self.begin_shutdown() else {
            return ShutdownReport {
                drained: true,
                dropped: 0,
                took: Duration::ZERO,
            };
        };
        let drained = rx.blocking_recv().unwrap_or(false);
        let report = self.report(drained, started);
        runtime.shutdown_timeout(Duration::from_secs(1));
        report
    }

    /// [`Self::shutdown`] for async callers (tests).
    pub async fn shutdown_async(mut self) -> ShutdownReport {
        let started = Instant::now();
        let Some((runtime, rx)) = self.begin_shutdown() else {
            return ShutdownReport {
                drained: true,
                dropped: 0,
                took: Duration::ZERO,
            };
        };
        let drained = rx.await.unwrap_or(false);
        let report = self.report(drained, started);
        runtime.shutdown_background();
        report
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ = self.shutdown.send(true);
            runtime.shutdown_background();
        }
    }
}

/// Runs a proxy until `shutdown` resolves, then shuts it down gracefully and
/// returns. Blocking, on the proxy's own threads; never exits the process.
/// Call it from `main` or a plain thread, not from inside an async task.
pub fn run(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, ProxyError> {
    let handle = Proxy::new(config).start()?;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(rt) = &handle.runtime {
        rt.spawn(async move {
            shutdown.await;
            let _ = tx.send(());
        });
    }
    let _ = rx.recv();
    Ok(handle.shutdown())
}

/// A listening socket with `SO_REUSEADDR` and a deep accept backlog.
fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let err = |source| ProxyError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

/// Raises the soft open-files limit to the hard limit: every proxied request
/// holds two sockets.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-files limit"),
    }
}
