//! The namespace fast path: apps bound to `127.0.0.1` or `::1` inside a
//! namespace sandbox are reachable the moment they listen, with no scan.
//!
//! # Design
//! A namespace sandbox's loopback is the loopback of its network namespace
//! (`/run/netns/<prefix>-<slot>`, carried in the route as [`Route::netns`]).
//! A socket keeps the namespace of the thread that created it, so
//! [`NetnsConnector`] dials each new upstream connection in this order:
//!
//! 1. the sandbox's address from the host (exactly what [`DirectConnector`]
//!    does: apps bound to `0.0.0.0` or the sandbox address see the same peer
//!    as before, and pay nothing extra);
//! 2. if refused: `127.0.0.1:port` with a socket created inside the netns;
//! 3. if refused: `[::1]:port` likewise (Node resolves `localhost` to `::1`).
//!
//! The target that worked is remembered per pool key ([`hints`]) and tried
//! first next time, and the peer is named after it: Pingora hands a pooled
//! socket back only when the socket's peer address equals the peer's, so a
//! loopback connection is reusable only under a peer that says `127.0.0.1`
//! (without this every request to a localhost app opened a new connection).
//!
//! Only `socket(2)` runs inside the namespace ([`socket`]): the worker thread
//! opens the namespace file, `setns`es in, creates the socket and `setns`es
//! straight back, with no `.await` in between, about 3–4 µs (measured:
//! open + setns + socket + setns + close 6–7 µs against 3–4 µs for socket +
//! close alone). A dedicated dialer thread would add a cross-thread wake-up
//! to every connect; keeping the namespace descriptors open would pin a
//! destroyed sandbox's namespace, and with it its veth, for as long as the
//! cache lives. Pingora pools upstream connections per (sandbox,
//! generation, port), so a connect is not a per-request cost anyway.
//!
//! Connection semantics stay those of the proxy: the peer's pool key comes
//! from [`base_peer`], every target refused means `ConnectRefused` (the
//! 3-attempt retry, then 502 `port_closed`), and because Pingora ignores
//! `connection_timeout` with a custom L4 connector, the whole dial (all
//! targets) runs under `connect_timeout` here and under
//! `total_connection_timeout` in Pingora.
//!
//! # Limitations
//! - Needs `CAP_SYS_ADMIN` (`setns`). `upstream_connect = "auto"` (the
//!   default) falls back to [`DirectConnector`] without it, with a warning.
//! - An app bound only to loopback sees its peer as `127.0.0.1`, as it would
//!   behind the guest's forwarder in a VM. Once a port was reached on
//!   loopback, new connections try loopback first for the sandbox's life: an
//!   app later bound to `0.0.0.0` on that port is reached over loopback too.
//! - Firecracker sandboxes carry no netns (their loopback is the guest
//!   kernel's); the guest agent's forwarder serves them.
//! - If the thread could not return to the proxy's namespace the process
//!   aborts rather than open later sockets in a sandbox's namespace.

mod hints;
mod socket;
/// The connector `config.upstream_connect` asks for. `Auto` is
/// [`NetnsConnector`] when this process may enter network namespaces, else
/// [`DirectConnector`] (logged); `Netns` without that permission is an error.
pub fn from_config(config: &ProxyConfig) -> Result<Arc<dyn UpstreamConnector>, ConfigError> {
    let netns = || {
        probe()?;
        NetnsConnector::new()
    };
    match config.upstream_connect {
        UpstreamConnect::Direct => Ok(Arc::new(DirectConnector)),
        UpstreamConnect::Netns => match netns() {
            Ok(c) => Ok(Arc::new(c)),
            Err(e) => Err(ConfigError {
                key: "upstream_connect",
                reason: format!(
                    "\"netns\" needs CAP_SYS_ADMIN (run as root) or use \"direct\": {e}: {}",
                    e.source
                ),
            }),
        },
        UpstreamConnect::Auto => match netns() {
            Ok(c) => Ok(Arc::new(c)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    cause = %e.source,
                    "cannot enter network namespaces: apps bound to 127.0.0.1 in namespace sandboxes are unreachable (upstream_connect = direct)"
                );
                Ok(Arc::new(DirectConnector))
            }
        },
    }
}

#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as L4Addr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use tokio::net::{TcpSocket, TcpStream};

pub use socket::{Home, NetnsError, probe};

use hints::{Hint, Hints};

use crate::config::{ConfigError, ProxyConfig, UpstreamConnect};
use crate::connect::{DirectConnector, PeerSettings, UpstreamConnector, base_peer};
use crate::routes::Route;

/// Dials inside the sandbox's network namespace when the route has one (see
/// the module docs); routes without one are dialled like [`DirectConnector`].
#[derive(Debug, Clone)]
pub struct NetnsConnector {
    home: Arc<Home>,
    hints: Arc<Hints>,
}

impl NetnsConnector {
    /// Call from a thread in the proxy's own network namespace (any thread,
    /// normally). Fails when the namespace cannot be opened; whether `setns`
    /// is permitted is [`probe`]'s question.
    pub fn new() -> Result<Self, NetnsError> {
        Ok(NetnsConnector {
            home: Arc::new(Home::current()?),
            hints: Arc::default(),
        })
    }
}

impl UpstreamConnector for NetnsConnector {
    fn peer(
        &self,
        route: &Route,
        port: u16,
        upgrade: bool,
        settings: &PeerSettings,
    ) -> Option<Box<HttpPeer>> {
        let Some(netns) = &route.netns else {
            return DirectConnector.peer(route, port, upgrade, settings);
        };
        let key = route.pool_key(port);
        let direct = route.address.map(|a| SocketAddr::new(a, port));
        // The target that worked last goes first, and the peer is named after
        // it: Pingora reuses a pooled socket only if its peer address matches.
        let first = match (self.hints.get(key), direct) {
            (Some(Hint::LoopbackV4), _) | (_, None) => Target::Inside(loopback_v4(port)),
            (Some(Hint::LoopbackV6), _) => Target::Inside(loopback_v6(port)),
            (Some(Hint::Direct) | None, Some(d)) => Target::Direct(d),
        };
        let mut peer = base_peer(first.addr(), route, port, upgrade, settings);
        peer.options.custom_l4 = Some(Arc::new(Dial {
            home: self.home.clone(),
            hints: self.hints.clone(),
            key,
            netns: netns.clone(),
            first,
            direct,
            port,
            timeout: settings.connect_timeout,
        }));
        Some(peer)
    }
}

/// Where one connect attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The sandbox's address, from the proxy's own namespace.
    Direct(SocketAddr),
    /// A loopback address, from inside the sandbox's namespace.
    Inside(SocketAddr),
}

fn loopback_v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn loopback_v6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)
}

impl Target {
    fn addr(self) -> SocketAddr {
        match self {
            Target::Direct(a) | Target::Inside(a) => a,
        }
    }

    fn hint(self) -> Hint {
        match self {
            Target::Direct(_) => Hint::Direct,
            Target::Inside(a) if a.is_ipv6() => Hint::LoopbackV6,
            Target::Inside(_) => Hint::LoopbackV4,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Direct(a) => write!(f, "{a}"),
            Target::Inside(a) => write!(f, "{a} inside the sandbox's network namespace"),
        }
    }
}

/// One upstream connect: the targets in order, under one timeout.
#[derive(Debug)]
pub(crate) struct Dial {
    home: Arc<Home>,
    hints: Arc<Hints>,
    /// The upstream's pool key, which its hint is stored under.
    key: u64,
    netns: Arc<Path>,
    /// Tried first (the hinted target, else the sandbox's address).
    first: Target,
    direct: Option<SocketAddr>,
    port: u16,
    timeout: Duration,
}

/// Why one target could not be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("connecting to {target}")]
    Connect {
        target: Target,
        #[source]
        source: io::Error,
    },
}

impl DialError {
    /// The Pingora error type the proxy classifies (`ConnectRefused` → 502
    /// `port_closed` after the retries; the rest → 504 `sandbox_unreachable`).
    pub(crate) fn etype(&self) -> ErrorType {
        match self {
            DialError::Netns(e) if e.is_gone() => ErrorType::ConnectNoRoute,
            DialError::Netns(_) => ErrorType::ConnectError,
            DialError::Connect { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                io::ErrorKind::TimedOut => ErrorType::ConnectTimedout,
                _ => match source.raw_os_error() {
                    Some(n) if is_unreachable(n) => ErrorType::ConnectNoRoute,
                    _ => ErrorType::ConnectError,
                },
            },
        }
    }
}

fn is_unreachable(errno: i32) -> bool {
    use nix::errno::Errno;
    errno == Errno::ENETUNREACH as i32 || errno == Errno::EHOSTUNREACH as i32
}

impl Dial {
    /// The targets in the order they are tried: [`Dial::first`], then the
    /// sandbox's address, `127.0.0.1` and `::1` inside.
    pub(crate) fn targets(&self) -> impl Iterator<Item = Target> + use<> {
        let inside = [loopback_v4(self.port), loopback_v6(self.port)];
        let first = self.first;
        std::iter::once(first).chain(
            self.direct
                .map(Target::Direct)
                .into_iter()
                .chain(inside.map(Target::Inside))
                .filter(move |t| *t != first),
        )
    }

    /// Tries every target; the first error is the one reported (the direct
    /// connect's, as with [`DirectConnector`]). Remembers what worked.
    pub(crate) async fn dial(&self) -> Result<(TcpStream, Target), DialError> {
        let mut first: Option<DialError> = None;
        for target in self.targets() {
            match self.connect(target).await {
                Ok(s) => {
                    self.hints.set(self.key, target.hint());
                    return Ok((s, target));
                }
                // Without the namespace no inside target can work.
                Err(e @ DialError::Netns(_)) => return Err(first.unwrap_or(e)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.expect("at least one target"))
    }

    async fn connect(&self, target: Target) -> Result<TcpStream, DialError> {
        let io_err = |source| DialError::Connect { target, source };
        let (socket, addr) = match target {
            Target::Direct(a) => (new_socket(a).map_err(io_err)?, a),
            Target::Inside(a) => (self.home.socket_in(&self.netns, a.is_ipv6())?, a),
        };
        socket.connect(addr).await.map_err(io_err)
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    if addr.is_ipv6() {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    }
}

#[async_trait]
impl L4Connect for Dial {
    async fn connect(&self, _shown: &L4Addr) -> pingora_error::Result<Stream> {
        match tokio::time::timeout(self.timeout, self.dial()).await {
            Ok(Ok((stream, target))) => {
                tracing::debug!(netns = %self.netns.display(), %target, "upstream connected");
                Ok(stream.into())
            }
            Ok(Err(e)) => Err(Error::because(
                e.etype(),
                format!("dialling port {} of {}", self.port, self.netns.display()),
                e,
            )),
            Err(_) => Error::e_explain(
                ErrorType::ConnectTimedout,
                format!(
                    "dialling port {} of {}: no answer within {:?}",
                    self.port,
                    self.netns.display(),
                    self.timeout
                ),
            ),
        }
    }
}
