//! The one request pipeline both transports run: the fast path (`fast/`,
//! plain `GET`/`HEAD` on wrenn's own sockets) and Pingora's `HttpProxy`
//! hooks (`service/`). Every decision about a request is made here, once;
//! a transport only reads the request head its own way and writes what it
//! is told.
//!
//! ```text
//! route()            Host check, URL form, denied ports and the envd
//!                    port's rule (envd.rs), route table  → ctx, or an Answer (308/400/403/404/409/421)
//! upstream_edits()   the upstream head: target, dropped and added headers
//! attempt_peer()     the peer of each connect attempt (backoff, re-route)
//! connect_failed() / connected() / release()   retry rule, pool and in-flight counters
//! response::edit()   the response head: hop-by-hop headers dropped, Location & co rewritten
//! Answer / Fault     everything the proxy says itself, and upstream faults as failures
//! finished()         metrics and the one access-log line
//! ```
//!
//! # Design
//! - A transport calls the steps in this order with a [`RequestCtx`]; the
//!   ctx carries what later steps and the access log need.
//! - Edits are lists the transports apply, not code they repeat: the fast
//!   path writes them as bytes while it copies the client's head, Pingora's
//!   hooks apply them to its header maps.
//! - The parity test (`tests/it/parity.rs`) sends the same requests through
//!   both transports and asserts identical upstream heads and answers.

pub(crate) mod envd;
mod outcome;
pub(crate) mod response;
mod route;
pub(crate) mod upstream;

pub(crate) use outcome::{Answer, Fault, Finished, is_connect_error};
pub(crate) use route::Request;
pub(crate) use upstream::UpstreamEdits;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ProxyConfig;
use crate::connect::{PeerSettings, UpstreamConnector};
use crate::failure::Failure;
use crate::hosts::AllowedHosts;
use crate::metrics::Metrics;
use crate::routes::{Route, RouteTable};
use crate::target::Form;

/// Per-request state the pipeline's steps share, whichever transport runs them.
#[derive(Debug)]
pub struct RequestCtx {
    pub(crate) start: Instant,
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) form: Option<Form>,
    pub(crate) port: u16,
    /// Path form: where the upstream target starts in the raw request target.
    pub(crate) path_offset: Option<usize>,
    pub(crate) upgrade: bool,
    pub(crate) attempts: u32,
    pub(crate) connect_failures: u32,
    pub(crate) reused: bool,
    /// In-flight count of this request's upstream when it connected; 0 when not counted.
    pub(crate) in_flight: u32,
    pub(crate) failure: Option<Failure>,
}

impl RequestCtx {
    pub(crate) fn new() -> Self {
        RequestCtx {
            start: Instant::now(),
            route: None,
            form: None,
            port: 0,
            path_offset: None,
            upgrade: false,
            attempts: 0,
            connect_failures: 0,
            reused: false,
            in_flight: 0,
            failure: None,
        }
    }
}

/// The proxy logic; one instance per proxy thread, sharing routes, metrics
/// and the connector.
#[derive(Clone)]
pub struct WrennProxy {
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) connector: Arc<dyn UpstreamConnector>,
    pub(crate) peer: PeerSettings,
    pub(crate) domain: String,
    pub(crate) connect_attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_in_flight: u32,
    pub(crate) keepalive_idle_secs: u64,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) websocket_idle: Duration,
    pub(crate) access_log: bool,
    pub(crate) denied_ports: Vec<u16>,
    /// The `Host` values the proxy listener answers.
    pub(crate) hosts: Arc<AllowedHosts>,
}

impl WrennProxy {
    pub(crate) fn new(
        config: &ProxyConfig,
        routes: Arc<RouteTable>,
        metrics: Arc<Metrics>,
        connector: Arc<dyn UpstreamConnector>,
        hosts: Arc<AllowedHosts>,
    ) -> Self {
        WrennProxy {
            routes,
            metrics,
            connector,
            peer: PeerSettings::from_config(config),
            domain: config.domain.to_ascii_lowercase(),
            connect_attempts: config.connect_attempts,
            backoff: Duration::from_millis(config.connect_backoff_ms),
            max_in_flight: config.upstream_max_in_flight,
            keepalive_idle_secs: config.keepalive_idle_secs,
            read_timeout: Duration::from_secs(config.read_timeout_secs),
            write_timeout: Duration::from_secs(config.write_timeout_secs),
            websocket_idle: Duration::from_secs(config.websocket_idle_secs),
            access_log: config.access_log,
            denied_ports: config.denied_ports.clone(),
            hosts,
        }
    }
}

#[cfg(test)]
mod tests;
