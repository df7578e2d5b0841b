//! Pure parts of the fast path: the peer it builds, the order of targets, the
//! error classes, and the route's netns from the agent. Behaviour against real
//! namespaces is tested in `tests/it/netns/` (root).

use std::io;

use wrenn_proto::wrenn::v1::sandbox_event::Kind;
use wrenn_proto::wrenn::v1::{Sandbox, SandboxState};

use super::*;
use crate::config::ProxyConfig;
use crate::routes::{RouteOptions, RouteState};

fn route(address: Option<&str>, netns: Option<&str>) -> Route {
    let r = Route::new(
        "sbx".parse().unwrap(),
        RouteState::Running,
        address.map(|a| a.parse().unwrap()),
        7,
        RouteOptions::default(),
    );
    match netns {
        Some(n) => r.with_netns(Path::new(n)),
        None => r,
    }
}

fn connector() -> NetnsConnector {
    NetnsConnector::new().expect("own netns opens")
}

#[test]
fn a_route_with_a_netns_gets_the_same_pool_key_and_timeouts_plus_a_dialler() {
    let s = PeerSettings::from_config(&ProxyConfig::default());
    let r = route(Some("10.210.31.65"), Some("/run/netns/wrenn-tf-8100"));
    let p = connector().peer(&r, 8123, false, &s).unwrap();
    let direct = DirectConnector.peer(&r, 8123, false, &s).unwrap();
    assert_eq!(
        p.group_key, direct.group_key,
        "same pool per (id, generation, port)"
    );
    assert_eq!(p._address, direct._address);
    assert_eq!(p.options.total_connection_timeout, Some(s.connect_timeout));
    assert_eq!(p.options.read_timeout, direct.options.read_timeout);
    assert!(direct.options.custom_l4.is_none());
    assert!(p.options.custom_l4.is_some());
}

#[test]
fn a_route_without_a_netns_is_dialled_directly() {
    let s = PeerSettings::from_config(&ProxyConfig::default());
    let p = connector()
        .peer(&route(Some("10.210.31.65"), None), 8123, false, &s)
        .unwrap();
    assert!(p.options.custom_l4.is_none());
    assert_eq!(p._address.to_string(), "10.210.31.65:8123");
    assert!(
        connector()
            .peer(&route(None, None), 8123, false, &s)
            .is_none()
    );
}

fn dial(direct: Option<&str>) -> Dial {
    let direct: Option<SocketAddr> = direct.map(|a| a.parse().unwrap());
    Dial {
        home: Arc::new(Home::current().unwrap()),
        hints: Arc::default(),
        key: 1 << 2,
        netns: Path::new("/run/netns/x").into(),
        first: direct.map_or(Target::Inside(loopback_v4(8123)), Target::Direct),
        direct,
        port: 8123,
        timeout: Duration::from_secs(2),
    }
}

#[test]
fn the_target_that_worked_goes_first_and_names_the_peer() {
    // Pingora reuses a pooled socket only if the peer's address is the
    // socket's peer: after a loopback connect, peers must name loopback.
    let s = PeerSettings::from_config(&ProxyConfig::default());
    let c = connector();
    let r = route(Some("10.210.31.65"), Some("/run/netns/wrenn-tf-8100"));
    let key = r.pool_key(8123);
    let addr = |c: &NetnsConnector| c.peer(&r, 8123, false, &s).unwrap()._address.to_string();
    assert_eq!(addr(&c), "10.210.31.65:8123");
    c.hints.set(key, Hint::LoopbackV4);
    assert_eq!(addr(&c), "127.0.0.1:8123");
    c.hints.set(key, Hint::LoopbackV6);
    assert_eq!(addr(&c), "[::1]:8123");
    assert_eq!(
        c.peer(&r, 8124, false, &s).unwrap()._address.to_string(),
        "10.210.31.65:8124",
        "another port has no hint"
    );
    let mut d = dial(Some("10.210.31.65:8123"));
    d.first = Target::Inside(loopback_v6(8123));
    let order: Vec<String> = d.targets().map(|t| t.addr().to_string()).collect();
    assert_eq!(order, ["[::1]:8123", "10.210.31.65:8123", "127.0.0.1:8123"]);
}

#[test]
fn targets_are_the_sandbox_address_then_loopback_v4_then_v6_inside() {
    let t: Vec<String> = dial(Some("10.210.31.65:8123"))
        .targets()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        t,
        [
            "10.210.31.65:8123",
            "127.0.0.1:8123 inside the sandbox's network namespace",
            "[::1]:8123 inside the sandbox's network namespace",
        ]
    );
    // A sandbox without an address yet is still reachable on its loopback.
    assert_eq!(dial(None).targets().count(), 2);
}

#[test]
fn dial_errors_map_to_the_proxys_failure_classes() {
    let t = Target::Direct("10.210.31.65:8123".parse().unwrap());
    let conn = |e: io::Error| DialError::Connect {
        target: t,
        source: e,
    };
    assert_eq!(
        conn(io::ErrorKind::ConnectionRefused.into()).etype(),
        ErrorType::ConnectRefused
    );
    assert_eq!(
        conn(io::ErrorKind::TimedOut.into()).etype(),
        ErrorType::ConnectTimedout
    );
    assert_eq!(
        conn(io::Error::from_raw_os_error(nix::libc::EHOSTUNREACH)).etype(),
        ErrorType::ConnectNoRoute
    );
    let gone = NetnsError {
        step: "open network namespace",
        path: "/run/netns/gone".into(),
        source: io::ErrorKind::NotFound.into(),
    };
    assert_eq!(gone.to_string(), "open network namespace /run/netns/gone");
    assert_eq!(DialError::Netns(gone).etype(), ErrorType::ConnectNoRoute);
}

#[tokio::test]
async fn a_missing_netns_is_reported_with_its_path_and_the_direct_error_comes_first() {
    let mut d = dial(None);
    d.netns = Path::new("/run/netns/wrenn-tf-does-not-exist").into();
    let e = d.dial().await.unwrap_err();
    assert_eq!(e.etype(), ErrorType::ConnectNoRoute);
    assert_eq!(
        e.to_string(),
        "open network namespace /run/netns/wrenn-tf-does-not-exist"
    );
    // With a direct target first, its refusal is what the proxy reports.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = l.local_addr().unwrap();
    drop(l);
    d.direct = Some(closed);
    d.first = Target::Direct(closed);
    let e = d.dial().await.unwrap_err();
    assert_eq!(e.etype(), ErrorType::ConnectRefused, "{e}");
}

#[test]
fn the_agents_netns_lands_in_the_route_and_a_relative_one_is_ignored() {
    let mut sb = Sandbox {
        id: "sbx".into(),
        state: SandboxState::Running as i32,
        address: "10.210.31.65".into(),
        generation: 1,
        netns: "/run/netns/wrenn-tf-8100".into(),
        ..Default::default()
    };
    let r = crate::watch::route_from(&sb, Kind::Running).unwrap();
    assert_eq!(
        r.netns.as_deref(),
        Some(Path::new("/run/netns/wrenn-tf-8100"))
    );
    sb.netns = "wrenn-tf-8100".into();
    assert_eq!(
        crate::watch::route_from(&sb, Kind::Running).unwrap().netns,
        None
    );
    sb.netns.clear();
    assert_eq!(
        crate::watch::route_from(&sb, Kind::Running).unwrap().netns,
        None
    );
}
