//! Extensions: how a downstream crate adds its own gRPC services, HTTP routes
//! and background tasks to the control plane without copying its bootstrap.
//!
//! Everything an extension adds is served on the control plane's listener,
//! behind the same API-key check as the built-in services unless the
//! extension declares a path prefix public with
//! [`ExtensionContext::allow_unauthenticated`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Request;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tower::Service;

use crate::hosts::HostTable;
use crate::state::ControlState;
use crate::store::Store;

/// Boxed error an extension may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Something that adds to the control plane. Installed once, in the order of
/// [`Options::extensions`](crate::Options::extensions), after the store is
/// open and migrated and before the listener accepts anything.
pub trait Extension: Send + 'static {
    /// Name used in logs and errors.
    fn name(&self) -> &str;

    /// Adds services, routes and tasks. An error stops the start-up.
    fn install(self: Box<Self>, ctx: &mut ExtensionContext<'_>) -> Result<(), BoxError>;
}

/// What [`Extension::install`] can reach and add to.
pub struct ExtensionContext<'a> {
    pub(crate) router: &'a mut axum::Router,
    pub(crate) public_prefixes: &'a mut Vec<String>,
    pub(crate) tasks: &'a mut Vec<(String, Task)>,
    pub(crate) state: &'a Arc<ControlState>,
    pub(crate) shutdown: &'a CancellationToken,
}

impl std::fmt::Debug for ExtensionContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtensionContext")
            .field("public_prefixes", &self.public_prefixes)
            .field(
                "tasks",
                &self.tasks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ExtensionContext<'_> {
    /// Serves a tonic service (e.g. `FooServer::new(impl)`) at `/<package.Service>/…`.
    pub fn add_grpc_service<S>(&mut self, svc: S)
    where
        S: Service<Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let routes = tonic::service::Routes::from(std::mem::take(self.router));
        *self.router = routes.add_service(svc).into_axum_router();
    }

    /// Merges plain HTTP routes (HTTP/1.1 and HTTP/2). Paths must not clash
    /// with other routes and `routes` must have no fallback of its own (axum
    /// panics on either, naming the route).
    pub fn add_http_routes(&mut self, routes: axum::Router) {
        let router = std::mem::take(self.router);
        *self.router = router.merge(routes);
    }

    /// Requests whose path starts with `prefix` skip the API-key check.
    pub fn allow_unauthenticated(&mut self, prefix: impl Into<String>) {
        self.public_prefixes.push(prefix.into());
    }

    /// Runs `task` once the server listens. It should return when
    /// [`shutdown_token`](Self::shutdown_token) is cancelled; tasks still
    /// running after the shutdown grace period are aborted.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.push((name.into(), Box::pin(task)));
    }

    /// Cancelled when the control plane begins shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The store (already migrated).
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The hosts and their agent channels.
    pub fn hosts(&self) -> &Arc<HostTable> {
        &self.state.hosts
    }

    /// Everything the built-in services share.
    pub fn state(&self) -> &Arc<ControlState> {
        self.state
    }
}
