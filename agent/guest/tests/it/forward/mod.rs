//! The localhost forwarder (`--forward-localhost`, issue 7 §1, §4) for real:
//! the guest agent and `python3 -m http.server` run inside a network
//! namespace laid out like a sandbox's; the test reaches the sandbox's address
//! from the host, as the proxy does. Root only.

mod net;

use std::net::SocketAddr;
use std::time::Duration;

use net::{Net, get, wait_for};

const PATIENCE: Duration = Duration::from_secs(5);

/// A directory whose listing names it, so answers tell which server gave them.
fn site(marker: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("{marker}.txt")), marker).unwrap();
    dir
}

fn answers_with(addr: SocketAddr, marker: &str) -> bool {
    get(addr).is_ok_and(|r| r.starts_with("HTTP/1.0 200") && r.contains(marker))
}

fn refused(addr: SocketAddr) -> bool {
    matches!(get(addr), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// One probe for [`wait_for`]: a connect refused within 200 ms. A SYN that
/// reaches a listener while it closes is dropped and TCP resends it only
/// after a second; probing again instead measures the forwarder, not that.
fn refused_now(addr: SocketAddr) -> bool {
    matches!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn a_localhost_app_is_reachable_within_a_second_and_stops_being_so_with_it() {
    let net = Net::new(8200);
    let _guest = net.guest("0.0.0.0:49983");
    let dir = site("v4-app");
    let (mut app, listening) = net.http_server("127.0.0.1", 8123, dir.path());
    wait_for("the forward", PATIENCE, || {
        answers_with(net.at(8123), "v4-app")
    });
    let delay = listening.elapsed();
    println!("listening → answering on {}: {delay:?}", net.at(8123));
    assert!(delay < Duration::from_secs(1), "{delay:?}");

    app.kill();
    let stopped = wait_for("the forward to stop", PATIENCE, || {
        refused_now(net.at(8123))
    });
    println!("app killed → port refused: {stopped:?}");
    assert!(stopped < Duration::from_secs(1), "{stopped:?}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn an_app_on_v6_loopback_is_forwarded_too() {
    let net = Net::new(8201);
    let _guest = net.guest("0.0.0.0:49983");
    let dir = site("v6-app");
    let (_app, _) = net.http_server("::1", 5173, dir.path());
    wait_for("the forward", PATIENCE, || {
        answers_with(net.at(5173), "v6-app")
    });
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn the_guest_agents_port_is_never_forwarded() {
    let net = Net::new(8202);
    // The agent itself only on loopback: exactly what the forwarder forwards.
    let _guest = net.guest("127.0.0.1:49983");
    let dir = site("control");
    let (_app, _) = net.http_server("127.0.0.1", 8000, dir.path());
    // The scan that found the app saw the agent's listener too (it was
    // there first), and both would have been forwarded by the same pass.
    wait_for("the control forward", PATIENCE, || {
        answers_with(net.at(8000), "control")
    });
    assert!(refused(net.at(49983)), "the guest port was forwarded");
    let ss = net.listeners();
    assert!(!ss.contains(&format!("{}:49983", net.addr)), "{ss}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn an_app_on_all_addresses_is_left_alone_and_can_take_over_a_forwarded_port() {
    let net = Net::new(8203);
    let _guest = net.guest("0.0.0.0:49983");
    // Bound to 0.0.0.0: reachable by itself; the forwarder must not touch it.
    let wide = site("wide-app");
    let (mut w, _) = net.http_server("0.0.0.0", 8080, wide.path());
    let local = site("local-app");
    let (_control, _) = net.http_server("127.0.0.1", 8081, local.path());
    wait_for("the control forward", PATIENCE, || {
        answers_with(net.at(8081), "local-app")
    });
    assert!(answers_with(net.at(8080), "wide-app"));
    let ss = net.listeners();
    assert!(
        !ss.contains(&format!("{}:8080", net.addr)),
        "forwarder bound 8080: {ss}"
    );
    assert!(!w.exited());

    // Restarting a loopback app on 0.0.0.0 right away: the forwarder has let
    // go of the port by the time the new server binds.
    for round in 0..5 {
        let (mut l, _) = net.http_server("127.0.0.1", 9000, local.path());
        wait_for("the forward", PATIENCE, || {
            answers_with(net.at(9000), "local-app")
        });
        l.kill();
        let (mut w, _) = net.http_server("0.0.0.0", 9000, wide.path());
        assert!(
            !w.exited(),
            "round {round}: the 0.0.0.0 server could not bind"
        );
        assert!(answers_with(net.at(9000), "wide-app"), "round {round}");
        w.kill();
    }
    w.kill();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn a_hundred_sequential_connects_through_a_forwarded_port_succeed() {
    let net = Net::new(8204);
    let _guest = net.guest("0.0.0.0:49983");
    let dir = site("seq-app");
    let (_app, _) = net.http_server("127.0.0.1", 8123, dir.path());
    wait_for("the forward", PATIENCE, || {
        answers_with(net.at(8123), "seq-app")
    });
    for i in 0..100 {
        // http.server speaks HTTP/1.0: one connection per request.
        let r = get(net.at(8123)).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        assert!(r.starts_with("HTTP/1.0 200"), "connect {i}: {r}");
    }
}
