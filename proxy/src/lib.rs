//! wrenn's data plane: a Pingora proxy from browsers to the ports sandboxes serve.
//!
//! ```text
//! browser ──HTTP/1.1, WS──► wrenn-proxy ──HTTP/1.1 pool per (sandbox, generation, port)──► sandbox ip:port
//!                               ▲
//!                               └── route table ◄── WatchSandboxes stream (own tonic channel) ── host agent
//! ```
//!
//! # URL forms
//! - `http://<port>-<id>.<domain>:7880/…` (subdomain; the app sees itself at `/`),
//! - `http://<host>:7880/proxy/<id>/<port>/…` (path; the prefix is stripped
//!   upstream and `Location`, `Content-Location`, `Refresh` and cookie paths
//!   are rewritten back under it),
//! - `E2b-Sandbox-Id` + `E2b-Sandbox-Port` headers on `localhost` or an IP literal
//!   (E2B's SDK). See [`target`] and [`rewrite`].
//!
//! # Headers sent upstream
//! `X-Forwarded-For` (the client's address; a client-sent value is replaced),
//! `X-Forwarded-Proto: http`, `X-Forwarded-Host` (the browser's Host), and in
//! path form `X-Forwarded-Prefix: /proxy/<id>/<port>`. The browser's own `Host`
//! is forwarded by default, because apps such as Jupyter compare `Origin` with
//! `Host`. Dev servers with a host allow-list (Vite, webpack-dev-server) want
//! `Host: localhost:<port>` instead: set the sandbox metadata key
//! `wrenn.proxy.host=localhost` (every port) or `wrenn.proxy.host.<port>=localhost`
//! (one port; `public` switches a port back). Apps that serve under the path
//! form's prefix themselves (Jupyter with `base_url=/proxy/<id>/<port>/`) set
//! `wrenn.proxy.prefix=keep` or `wrenn.proxy.prefix.<port>=keep`: their path-form
//! requests go upstream unstripped, without `X-Forwarded-Prefix`. See
//! [`routes::RouteOptions`].
//!
//! # Design
//! - **Request path without locks or I/O**: routes are read from an
//!   `ArcSwap` map ([`RouteTable`]); metrics are pre-resolved atomic counters;
//!   one access-log line per request (target `wrenn_proxy::access`).
//! - **Connect retry**: up to `connect_attempts` (3) for connect failures only,
//!   sleeping 100 ms then 200 ms, each attempt limited to `connect_timeout_ms` (2 s).
//! - **Upstream pool**: HTTP/1.1 only, keyed per (sandbox id, generation,
//!   port) through Pingora's `group_key`, idle 4 s; `pool_size` is split
//!   evenly between the threads, and each thread's fast path and its Pingora
//!   `HttpProxy` pool up to that share each (at most 2 × `pool_size` idle
//!   connections in all);
//!   above `upstream_max_in_flight` requests to one upstream, requests carry
//!   `Connection: close` so the pool keeps at most about that many sockets for it.
//! - **Client connections**: a 10 s deadline for request headers (Pingora has
//!   none; see `listener.rs`), request heads of at most 64 KiB and 256
//!   fields (else 431), 620 s keep-alive idle, 1000 requests per connection,
//!   WebSockets exempt from the 60 s read timeout (1 h idle).
//! - **`Host` checks**: both listeners answer 421 to a `Host` that is not
//!   theirs, against DNS rebinding ([`hosts`]).
//! - **Isolation**: the proxy runs on its own threads, one current-thread
//!   runtime and upstream pool each, like nginx's workers ([`Proxy::start`],
//!   [`run`]); its pools never carry RPC and the watcher's tonic channel
//!   never carries proxied bytes.
//! - **Upstream connect** is one trait, [`UpstreamConnector`]: by default
//!   [`NetnsConnector`] (the sandbox's address, then its loopback from inside
//!   its netns, so apps bound to `127.0.0.1` answer the moment they listen;
//!   see [`netns`]), or [`DirectConnector`] (`upstream_connect = "direct"`).
//!
//! # Limitations
//! - Plain HTTP only (terminate TLS in front); no h2c; no WebSocket over HTTP/2.
//! - Pooled connections of a destroyed sandbox cannot be purged by key; they
//!   expire within the 4 s idle timeout and are never handed to another
//!   generation (different pool key).
//! - Edge mode (forwarding to the host that owns a sandbox) comes with multi-host.
// One audited exception: `fast::exchange::into_tcp` duplicates a descriptor Pingora owns.
#![deny(unsafe_code)]

mod admin;
mod client_stream;
pub mod config;
pub mod connect;
pub mod failure;
mod fast;
#[doc(hidden)]
pub mod fuzzing;
mod head;
pub mod hosts;
mod listener;
pub mod metrics;
pub mod netns;
mod pipeline;
pub mod rewrite;
pub mod routes;
mod server;
mod service;
pub mod target;
pub mod urls;
mod watch;

pub use config::{ConfigError, ProxyConfig, UpstreamConnect};
pub use connect::{DirectConnector, PeerSettings, UpstreamConnector, base_peer};
pub use failure::Failure;
pub use metrics::Metrics;
pub use netns::NetnsConnector;
pub use routes::{
    HostPolicy, PrefixPolicy, Readiness, Route, RouteOptions, RouteState, RouteTable,
};
pub use server::{Proxy, ProxyError, ProxyHandle, ShutdownReport, run};
pub use urls::{SandboxUrls, public_host, sandbox_urls};
pub use watch::WatchError;

/// Sends Pingora's `log` records (errors and warnings it prints itself) into
/// `tracing`, so they land in wrenn's logs. Idempotent; a no-op when another
/// `log` logger is installed already (tracing-subscriber installs the same bridge).
pub fn bridge_pingora_logs() {
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(log::LevelFilter::Info)
        .init();
}
