//! The upstream connect step, behind one trait.
//!
//! [`DirectConnector`] dials `address:port` from the host's own network
//! namespace over the sandbox's veth. [`NetnsConnector`](crate::netns::NetnsConnector)
//! (chosen by `upstream_connect`, see [`crate::netns::from_config`]) also reaches apps bound to the
//! sandbox's loopback, by opening sockets inside its netns: it builds the same
//! peer with [`base_peer`] and sets `peer.options.custom_l4`.
//! `total_connection_timeout` is set because Pingora skips
//! `connection_timeout` for `custom_l4`.

use std::net::SocketAddr;
use std::time::Duration;

use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;

use crate::config::ProxyConfig;
use crate::routes::Route;

/// Timeouts and pool settings every upstream peer gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    pub connect_timeout: Duration,
    /// How long an idle connection stays pooled.
    pub idle_timeout: Duration,
    /// Per-read timeout on responses; `None` waits as long as the client does.
    pub read_timeout: Option<Duration>,
    /// Per-read timeout once a connection is upgraded (WebSocket).
    pub upgraded_read_timeout: Duration,
}

impl PeerSettings {
    pub fn from_config(c: &ProxyConfig) -> Self {
        PeerSettings {
            connect_timeout: c.connect_timeout(),
            idle_timeout: Duration::from_secs(c.upstream_idle_secs),
            read_timeout: (c.upstream_read_timeout_secs > 0)
                .then(|| Duration::from_secs(c.upstream_read_timeout_secs)),
            upgraded_read_timeout: Duration::from_secs(c.websocket_idle_secs),
        }
    }
}

/// Builds the peer for each upstream connect attempt.
///
/// Called on the request path for every attempt, retries included: keep it
/// cheap (no I/O, no locks). Returning `None` means the sandbox cannot be
/// reached this way; the client gets 504 `sandbox_unreachable`.
pub trait UpstreamConnector: Send + Sync + 'static {
    fn peer(
        &self,
        route: &Route,
        port: u16,
        upgrade: bool,
        settings: &PeerSettings,
    ) -> Option<Box<HttpPeer>>;
}

/// Dials the sandbox's host-reachable address directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

impl UpstreamConnector for DirectConnector {
    fn peer(
        &self,
        route: &Route,
        port: u16,
        upgrade: bool,
        settings: &PeerSettings,
    ) -> Option<Box<HttpPeer>> {
        let addr = SocketAddr::new(route.address?, port);
        Some(base_peer(addr, route, port, upgrade, settings))
    }
}

/// A plain-HTTP/1.1 peer for `addr` with wrenn's timeouts and a pool key
/// unique to (sandbox id, generation, port).
pub fn base_peer(
    addr: SocketAddr,
    route: &Route,
    port: u16,
    upgrade: bool,
    settings: &PeerSettings,
) -> Box<HttpPeer> {
    let mut peer = Box::new(HttpPeer::new(addr, false, String::new()));
    peer.group_key = route.pool_key(port);
    let o = &mut peer.options;
    o.alpn = ALPN::H1;
    o.connection_timeout = Some(settings.connect_timeout);
    o.total_connection_timeout = Some(settings.connect_timeout);
    o.idle_timeout = Some(settings.idle_timeout);
    o.read_timeout = if upgrade {
        Some(settings.upgraded_read_timeout)
    } else {
        settings.read_timeout
    };
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{RouteOptions, RouteState};

    fn route(generation: u64, address: Option<&str>) -> Route {
        Route::new(
            "abc".parse().unwrap(),
            RouteState::Running,
            address.map(|a| a.parse().unwrap()),
            generation,
            RouteOptions::default(),
        )
    }

    #[test]
    fn direct_peer_is_h1_with_timeouts_and_a_generation_pool_key() {
        let s = PeerSettings::from_config(&ProxyConfig::default());
        let r1 = route(1, Some("10.210.0.3"));
        let p = DirectConnector.peer(&r1, 8000, false, &s).unwrap();
        assert_eq!(p._address.to_string(), "10.210.0.3:8000");
        assert_eq!(p.options.alpn, ALPN::H1);
        assert_eq!(p.options.connection_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.options.idle_timeout, Some(Duration::from_secs(4)));
        assert_eq!(p.options.read_timeout, None);
        assert_eq!(p.group_key, r1.pool_key(8000));
        let p2 = DirectConnector
            .peer(&route(2, Some("10.210.0.3")), 8000, false, &s)
            .unwrap();
        assert_ne!(p.group_key, p2.group_key);
        let ws = DirectConnector.peer(&r1, 8000, true, &s).unwrap();
        assert_eq!(ws.options.read_timeout, Some(Duration::from_secs(3600)));
        assert!(
            DirectConnector
                .peer(&route(1, None), 8000, false, &s)
                .is_none()
        );
    }
}
