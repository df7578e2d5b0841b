//! Which ports to forward, from the listening sockets the kernel reports.
//!
//! A port is forwarded when everything listening on it is bound to loopback
//! (`127.0.0.0/8`, `::1`, or `::ffff:127.x`): then nothing else can reach the
//! app. Any other listener on the port — the wildcard `0.0.0.0` or `::`, the
//! sandbox's address, any other address — means the app is reachable already
//! (or someone else owns the port), and the forwarder stays away. Excluded
//! ports (the guest agent's own) are never forwarded.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Port → the loopback address to forward its connections to.
pub type Plan = BTreeMap<u16, SocketAddr>;

/// Whether `ip` is a loopback address (IPv4-mapped ones included).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// The forwards `listeners` call for. `ours` are the forwarder's own
/// listening addresses (skipped), `excluded` ports are never forwarded.
pub fn plan(listeners: &[SocketAddr], ours: &[SocketAddr], excluded: &[u16]) -> Plan {
    let mut targets: Plan = BTreeMap::new();
    let mut reachable: Vec<u16> = Vec::new();
    for l in listeners {
        let port = l.port();
        if port == 0 || excluded.contains(&port) || ours.contains(l) {
            continue;
        }
        if !is_loopback(l.ip()) {
            reachable.push(port);
            continue;
        }
        let target = normalise(*l);
        targets
            .entry(port)
            .and_modify(|t| *t = preferred(*t, target))
            .or_insert(target);
    }
    targets.retain(|port, _| !reachable.contains(port));
    targets
}

/// `::ffff:127.0.0.1` → `127.0.0.1` (connecting over IPv4 reaches it).
fn normalise(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// Of two loopback listeners on one port: `127.0.0.1`, then any IPv4, then `::1`.
fn preferred(a: SocketAddr, b: SocketAddr) -> SocketAddr {
    let rank = |s: SocketAddr| match s.ip() {
        IpAddr::V4(Ipv4Addr::LOCALHOST) => 0,
        IpAddr::V4(_) => 1,
        IpAddr::V6(_) => 2,
    };
    if rank(b) < rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn plan_of(listeners: &[&str], ours: &[&str]) -> Vec<(u16, String)> {
        plan(&addrs(listeners), &addrs(ours), &[49983])
            .into_iter()
            .map(|(p, t)| (p, t.to_string()))
            .collect()
    }

    #[test]
    fn loopback_only_ports_are_forwarded_to_their_address() {
        assert_eq!(
            plan_of(
                &[
                    "127.0.0.1:8123",
                    "[::1]:5173",
                    "127.0.0.2:9000",
                    "[::ffff:127.0.0.1]:7000"
                ],
                &[]
            ),
            [
                (5173, "[::1]:5173".to_string()),
                (7000, "127.0.0.1:7000".to_string()),
                (8123, "127.0.0.1:8123".to_string()),
                (9000, "127.0.0.2:9000".to_string()),
            ]
        );
    }

    #[test]
    fn a_port_someone_else_reaches_is_left_alone() {
        for other in [
            "0.0.0.0:8123",
            "[::]:8123",
            "10.210.31.65:8123",
            "[fe80::1]:8123",
        ] {
            assert_eq!(plan_of(&["127.0.0.1:8123", other], &[]), [], "{other}");
            assert_eq!(plan_of(&[other, "127.0.0.1:8123"], &[]), [], "{other}");
        }
    }

    #[test]
    fn the_forwarders_own_listeners_do_not_count() {
        assert_eq!(
            plan_of(
                &["127.0.0.1:8123", "10.210.31.65:8123"],
                &["10.210.31.65:8123"]
            ),
            [(8123, "127.0.0.1:8123".to_string())]
        );
    }

    #[test]
    fn the_guest_port_is_never_forwarded_and_v4_loopback_is_preferred() {
        assert_eq!(plan_of(&["127.0.0.1:49983"], &[]), []);
        assert_eq!(
            plan_of(&["[::1]:3000", "127.0.0.5:3000", "127.0.0.1:3000"], &[]),
            [(3000, "127.0.0.1:3000".to_string())]
        );
    }

    #[test]
    fn loopback_is_recognised_in_every_form() {
        for ip in ["127.0.0.1", "127.255.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "10.210.31.65",
            "::ffff:10.0.0.1",
            "169.254.0.21",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }
}
