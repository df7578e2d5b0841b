//! wrenn's control plane as a library: the `wrenn.v1.Sandboxes`,
//! `wrenn.v1.Templates`, `wrenn.v1.Hosts` and `wrenn.v1.Keys` gRPC
//! services, gRPC health, the store (SQLite or PostgreSQL), API-key auth,
//! the relay of interactive calls to host agents, and the reconciler.
//!
//! [`run`] is the whole control plane (the `wrenn control` command is a thin
//! wrapper around it); [`start`] is the same but returns once it listens, with
//! a [`Control`] handle that knows the bound address. A downstream crate adds
//! its own services, HTTP routes and background tasks through
//! [`Extension`]s instead of copying the bootstrap:
//!
//! ```no_run
//! # async fn demo() -> Result<(), wrenn_control::Error> {
//! let options = wrenn_control::Options::from_env()
//!     .with_shutdown(async { let _ = tokio::signal::ctrl_c().await; });
//! wrenn_control::run(options).await
//! # }
//! ```
//!
//! # Design
//!
//! - One listener serves everything: gRPC over HTTP/2 and plain HTTP/1.1 or
//!   HTTP/2 routes, each request checked for an API key first
//!   (`auth`), except gRPC health and prefixes an extension makes public.
//! - One tonic channel per host agent (`hosts`), used by the lifecycle calls,
//!   the relays and the reconciler; never by data-plane traffic.
//! - The store is the durable record; each host agent is the live truth. A
//!   watcher per host (`watch`) applies the agent's lifecycle events as they
//!   happen, and the reconciler (`reconcile`) compares the two every interval
//!   as the safety net.
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod e2b;
mod error;
pub mod extension;
pub mod hosts;
pub mod options;
pub mod reconcile;
pub mod service;
mod state;
pub mod store;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tower::Layer;
use wrenn_proto::wrenn::v1::hosts_server::HostsServer;
use wrenn_proto::wrenn::v1::keys_server::KeysServer;
use wrenn_proto::wrenn::v1::sandboxes_server::SandboxesServer;
use wrenn_proto::wrenn::v1::templates_server::TemplatesServer;

pub use error::{Chain, Error};
pub use extension::{BoxError, Extension, ExtensionContext};
pub use options::{HostConfig, Options, OrphanPolicy, ServerLimits};
pub use reconcile::{ReconcileError, ReconcileReport};
pub use state::ControlState;
pub use store::{Store, StoreConfig};

use auth::{AuthLayer, Authenticator};
use hosts::{Host, HostTable};
use reconcile::Reconciler;
use service::{HostsService, KeysService, SandboxesService, TemplatesService};
use store::{HostRecord, now_ms};

/// Largest gRPC message the public services accept or send.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// Path prefix of gRPC health, served without an API key.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Starts the control plane and runs it until its shutdown signal resolves.
pub async fn run(options: Options) -> Result<(), Error> {
    start(options).await?.wait().await
}

/// Opens the store (applying migrations), creates the admin key on first
/// start, installs the extensions, and listens. Returns once connections are
/// accepted.
pub async fn start(options: Options) -> Result<Control, Error> {
    let Options {
        wrenn_dir,
        store: store_config,
        listen,
        hosts,
        reconcile_interval,
        orphan_policy,
        stopped_retention,
        lifecycle_timeout,
        limits,
        extensions,
        shutdown: signal,
    } = options;

    let store = Store::open(&store_config)
        .await
        .map_err(|source| Error::Store {
            location: store_config.describe(),
            source,
        })?;
    let prepared = prepare(&store, &wrenn_dir, hosts, &limits).await;
    let (table, admin_key_created) = match prepared {
        Ok(p) => p,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let state = Arc::new(ControlState::new(
        store.clone(),
        Arc::new(table),
        lifecycle_timeout,
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SandboxesServer<SandboxesService>>()
        .await;
    health.set_serving::<HostsServer<HostsService>>().await;
    health
        .set_serving::<TemplatesServer<TemplatesService>>()
        .await;
    health.set_serving::<KeysServer<KeysService>>().await;
    // One authenticator for gRPC and E2B's REST API: the Keys service
    // revokes through it, so both refuse a revoked key at once.
    let authenticator = Authenticator::new(store.clone());
    let routes = tonic::service::Routes::new(health_service)
        .add_service(
            SandboxesServer::new(SandboxesService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(HostsServer::new(HostsService::new(state.clone())))
        .add_service(
            // A build carries its COPY sources.
            TemplatesServer::new(TemplatesService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(KeysServer::new(KeysService::new(
            state.clone(),
            authenticator.clone(),
        )));
    let mut router = routes.into_axum_router();
    let mut public = vec![HEALTH_PREFIX.to_owned()];
    let mut tasks = Vec::new();
    let shutdown = CancellationToken::new();
    for ext in extensions {
        let name = ext.name().to_owned();
        let mut ctx = ExtensionContext {
            router: &mut router,
            public_prefixes: &mut public,
            tasks: &mut tasks,
            state: &state,
            shutdown: &shutdown,
        };
        if let Err(source) = ext.install(&mut ctx) {
            store.close().await;
            return Err(Error::Extension { name, source });
        }
        tracing::info!(extension = %name, "extension installed");
    }
    // E2B's REST API checks its own header (X-API-Key) with the same keys.
    let router = router.merge(e2b::router(state.clone(), authenticator.clone()));
    public.extend(e2b::PREFIXES.iter().map(|p| (*p).to_owned()));
    let service = AuthLayer::new(authenticator, public).layer(router);

    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(source) => {
            store.close().await;
            return Err(Error::Listen {
                addr: listen,
                source,
            });
        }
    };
    let local_addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: listen,
        source,
    })?;
    let server = tokio::spawn(wrenn_proto::serve::serve(
        listener,
        service,
        limits,
        shutdown.clone(),
    ));

    let reconciler = Arc::new(Reconciler::new(
        state.clone(),
        orphan_policy,
        stopped_retention,
    ));
    let mut background = JoinSet::new();
    background.spawn(reconciler.clone().run(reconcile_interval, shutdown.clone()));
    for host in state.hosts.iter() {
        background.spawn(watch::watch_host(
            state.clone(),
            host.clone(),
            shutdown.clone(),
        ));
    }
    for (name, task) in tasks {
        tracing::debug!(task = %name, "starting extension task");
        background.spawn(task);
    }
    if let Some(signal) = signal {
        let token = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signal => token.cancel(),
                _ = token.cancelled() => {}
            }
        });
    }
    tracing::info!(
        listen = %local_addr,
        store = %store_config.describe(),
        hosts = state.hosts.iter().count(),
        "control plane listening"
    );
    Ok(Control {
        local_addr,
        wrenn_dir,
        admin_key_created,
        state,
        reconciler,
        shutdown,
        server: Some(server),
        background,
        health,
        grace: limits.shutdown_grace,
    })
}

/// Hosts and the admin key, before anything listens.
async fn prepare(
    store: &Store,
    wrenn_dir: &Path,
    hosts: Vec<HostConfig>,
    limits: &ServerLimits,
) -> Result<(HostTable, Option<PathBuf>), Error> {
    let hosts = hosts
        .into_iter()
        .map(|h| {
            Host::new(
                h,
                limits.http2_keepalive_interval,
                limits.http2_keepalive_timeout,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let table = HostTable::new(hosts)?;
    for h in table.iter() {
        let now = now_ms();
        let record = HostRecord {
            id: h.id().to_owned(),
            agent_address: h.config().agent_address.clone(),
            proxy_address: h.config().proxy_address.clone(),
            created_at: now,
            updated_at: now,
        };
        store
            .upsert_host(&record)
            .await
            .map_err(|source| Error::RegisterHost {
                host: h.id().to_owned(),
                source,
            })?;
    }
    let created = auth::ensure_admin_key(store, wrenn_dir)
        .await
        .map_err(|source| Error::Auth {
            dir: wrenn_dir.to_owned(),
            source,
        })?;
    Ok((table, created))
}

/// A running control plane. Dropping it begins shutdown; [`Control::wait`]
/// waits for it to finish.
#[derive(Debug)]
pub struct Control {
    local_addr: SocketAddr,
    wrenn_dir: PathBuf,
    admin_key_created: Option<PathBuf>,
    state: Arc<ControlState>,
    reconciler: Arc<Reconciler>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    background: JoinSet<()>,
    health: HealthReporter,
    grace: Duration,
}

impl Control {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local_addr>`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// `<wrenn_dir>/admin.key`.
    pub fn admin_key_path(&self) -> PathBuf {
        self.wrenn_dir.join(auth::ADMIN_KEY_FILE)
    }

    /// The admin key file when this start created it (first start).
    pub fn admin_key_created(&self) -> Option<&Path> {
        self.admin_key_created.as_deref()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn state(&self) -> &Arc<ControlState> {
        &self.state
    }

    /// Runs one reconcile pass over every host now (waiting for a pass in
    /// progress to finish first).
    pub async fn reconcile_now(&self) -> Vec<Result<ReconcileReport, ReconcileError>> {
        self.reconciler.reconcile_all().await
    }

    /// Reconcile passes completed so far (the first runs right after start).
    pub fn reconcile_passes(&self) -> u64 {
        self.reconciler.passes()
    }

    /// Begins shutdown, as the shutdown signal would.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for shutdown to begin (signal or [`Control::shutdown`]), then for
    /// connections to finish (at most the grace period) and background tasks
    /// to stop; closes the store.
    pub async fn wait(mut self) -> Result<(), Error> {
        let mut server = self
            .server
            .take()
            .expect("server handle is taken only here");
        let early = tokio::select! {
            _ = self.shutdown.cancelled() => None,
            res = &mut server => Some(res),
        };
        self.shutdown.cancel();
        self.health
            .set_not_serving::<SandboxesServer<SandboxesService>>()
            .await;
        self.health
            .set_not_serving::<HostsServer<HostsService>>()
            .await;
        self.health
            .set_not_serving::<TemplatesServer<TemplatesService>>()
            .await;
        self.health
            .set_not_serving::<KeysServer<KeysService>>()
            .await;
        let served = match early {
            Some(res) => res,
            None => server.await,
        };
        let mut background = std::mem::take(&mut self.background);
        let stopped = tokio::time::timeout(self.grace, async {
            while background.join_next().await.is_some() {}
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(
                tasks = background.len(),
                "background tasks still running after the grace period; aborting them"
            );
            background.shutdown().await;
        }
        self.state.store.close().await;
        tracing::info!("control plane stopped");
        served.map_err(Error::ServerTask)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
