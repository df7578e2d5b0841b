//! Starting and stopping a proxy instance on its own runtimes and threads.
//!
//! # Design
//! The proxy runs Pingora's `HttpProxy` the way nginx runs workers: `threads`
//! threads (`wrenn-proxy-<n>`), each a current-thread tokio runtime with its
//! own `HttpProxy` and fast path (`fast/`; each with its own upstream
//! keep-alive pool, a `threads`-th of `pool_size`) and its own accept loop
//! (`listener.rs`) on the shared listening socket. A client connection and the upstream sockets it uses
//! stay on the thread that accepted it. A work-stealing runtime hands tasks
//! and I/O readiness between its workers: at 2000 req/s that was 1.3 futex
//! wake-ups per request, each a cross-CPU wake-up, and 20 % fewer req/s flat
//! out on this 2-core machine. Routes, metrics, in-flight counts and the
//! connector are shared. Pingora's `Server` is not used: it sleeps its whole
//! grace period even when idle, handles signals itself and can `exit` the
//! process. Shutdown is: stop accepting, wake idle keep-alive connections so
//! they close, wait until the open connections drain or the grace period
//! ends, then drop what is left.
//!
//! The route watcher, the admin listener, the refresh of the host's
//! addresses (`hosts.rs`) and the shutdown run on a small runtime of their
//! own (`wrenn-proxy-ctl`); the watcher's tonic channel is its own (no
//! proxied bytes on it).
//!
//! # Limitations
//! - Every thread's accept loop wakes for each new connection (tokio cannot
//!   register with `EPOLLEXCLUSIVE`); the least busy thread accepts first,
//!   which balances the load at a few threads. With many threads,
//!   `SO_REUSEPORT` listeners per thread would save those wake-ups.
//! - Connections never move between threads: a thread busy with one heavy
//!   stream is shared by the other connections it accepted, as in nginx.

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
use crate::fast::FastPath;
use crate::hosts::{AllowedHosts, OwnAddrs};
use crate::listener::{App, ConnSettings, Tracker, accept_loop};
use crate::metrics::{Metrics, MetricsError};
use crate::pipeline::WrennProxy;
use crate::routes::RouteTable;
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
            None => crate::netns::from_config(&c)?,
        };
        crate::bridge_pingora_logs();
        raise_fd_limit();
        let threads = c.worker_threads();
        let runtime_err = |threads, source| ProxyError::Runtime { threads, source };
        // Admin listener, route watcher and shutdown: off the request path.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wrenn-proxy-ctl")
            .enable_all()
            .build()
            .map_err(|source| runtime_err(1, source))?;
        let mut ctl = Background(Some(runtime));
        let runtime = ctl.0.as_ref().expect("just built");
        let _enter = runtime.enter();

        let listener = bind("proxy", c.listen)?;
        let listen = listener
            .local_addr()
            .map_err(bind_error("proxy", c.listen))?;
        let admin_listener = c.admin_listen.map(|a| bind("admin", a)).transpose()?;
        let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

        let watching = self.static_routes.is_none();
        let routes = self.static_routes.unwrap_or_default();
        let metrics = Metrics::new(routes.clone())?;
        let channel = if watching {
            Some(agent_channel(&c.agent, &c.agent_key)?)
        } else {
            None
        };

        // Total attempts per request: connect attempts plus room for one
        // stale-pooled-connection retry (`error_while_proxy`). Each thread
        // has its own pool, a share of the configured total.
        let conf = Arc::new(ServerConf {
            threads,
            max_retries: c.connect_attempts as usize + 2,
            upstream_keepalive_pool_size: c.pool_size.div_ceil(threads),
            ..ServerConf::default()
        });
        // The host's addresses, for `Host` checks: read now, refreshed below.
        let own = OwnAddrs::read();
        let hosts = AllowedHosts::new(&c.domain, &c.allowed_hosts, own.clone())
            .map(Arc::new)
            .map_err(|reason| ConfigError {
                key: "allowed_hosts",
                reason,
            })?;
        let logic = WrennProxy::new(
            &c,
            routes.clone(),
            metrics.clone(),
            connector,
            hosts.clone(),
        );

        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = Arc::new(Tracker::default());
        let settings = Arc::new(ConnSettings {
            header_timeout: c.header_timeout(),
            keepalive_idle_secs: c.keepalive_idle_secs,
            keepalive_requests: c.keepalive_requests,
        });
        let listener = listener.into_std().map_err(bind_error("proxy", listen))?;
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let app: Arc<App> = Arc::new(pingora_proxy::http_proxy(&conf, logic.clone()));
            let fast = c.fast_path.then(|| {
                let pool = conf.upstream_keepalive_pool_size;
                Arc::new(FastPath::new(logic.clone(), pool))
            });
            let listener = listener.try_clone().map_err(bind_error("proxy", listen))?;
            let (a, logic, settings, tracker, metrics, shutdown) = (
                app.clone(),
                Arc::new(logic.clone()),
                settings.clone(),
                tracker.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            );
            let worker = Worker::start(i, app, listener, move |l| {
                accept_loop(l, a, logic, fast, settings, tracker, metrics, shutdown)
            })
            .map_err(|source| runtime_err(threads, source))?;
            workers.push(worker);
        }
        drop(listener);
        if let Some(l) = admin_listener {
            let admin = Admin::new(metrics.clone(), routes.clone(), hosts, &c.agent_key);
            runtime.spawn(serve_admin(l, admin, shutdown_rx.clone()));
        }
        // Ends with the control runtime.
        runtime.spawn(own.keep_fresh());
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
            runtime: ctl.0.take(),
            workers,
            shutdown,
            tracker,
            listen,
            admin,
            routes,
            metrics,
            grace: c.grace_period(),
        })
    }
}

/// Shuts its runtime down without waiting when dropped: a start-up error
/// can return inside an async caller, where dropping a runtime panics.
struct Background(Option<Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// One proxy thread: a current-thread runtime with its own `HttpProxy`, so
/// its own upstream pool, and its own accept loop on the shared listening
/// socket. A connection, its upstream sockets and their wake-ups stay on one
/// thread, as in nginx's workers: no hand-offs between threads per request.
struct Worker {
    app: Arc<App>,
    /// Dropped (or sent) to stop the thread, which then drops its tasks.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Starts thread `wrenn-proxy-<i>` serving `listener` with `serve`.
    fn start<F>(
        i: usize,
        app: Arc<App>,
        listener: std::net::TcpListener,
        serve: impl FnOnce(TcpListener) -> F,
    ) -> std::io::Result<Worker>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        {
            let _enter = runtime.enter();
            listener.set_nonblocking(true)?;
            runtime.spawn(serve(TcpListener::from_std(listener)?));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("wrenn-proxy-{i}"))
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                // Dropping the runtime drops what is left: connections close.
                drop(runtime);
            })?;
        Ok(Worker {
            app,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop; it drops its connections and exits.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Stops every worker and waits up to `wait` for their threads to end.
fn stop_workers(workers: &mut [Worker], wait: Duration) {
    for w in workers.iter_mut() {
        w.stop();
    }
    let deadline = Instant::now() + wait;
    for w in workers.iter_mut() {
        let Some(t) = w.thread.take() else { continue };
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

/// A running proxy. Dropping it stops the proxy at once; [`ProxyHandle::shutdown`]
/// stops it gracefully.
pub struct ProxyHandle {
    /// Admin listener, route watcher, shutdown.
    runtime: Option<Runtime>,
    workers: Vec<Worker>,
    shutdown: watch::Sender<bool>,
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
        let apps: Vec<Arc<App>> = self.workers.iter().map(|w| w.app.clone()).collect();
        let (tracker, grace) = (self.tracker.clone(), self.grace);
        runtime.spawn(async move {
            // Wakes keep-alive connections idling in a header read so they close.
            for app in apps {
                app.http_cleanup().await;
            }
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
        stop_workers(&mut self.workers, Duration::from_secs(1));
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
        stop_workers(&mut self.workers, Duration::ZERO);
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
        stop_workers(&mut self.workers, Duration::ZERO);
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

fn bind_error(
    what: &'static str,
    addr: SocketAddr,
) -> impl Fn(std::io::Error) -> ProxyError + Copy {
    move |source| ProxyError::Bind { what, addr, source }
}

/// A listening socket with `SO_REUSEADDR` and a deep accept backlog.
fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let err = bind_error(what, addr);
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
