//! Graceful shutdown: in-flight requests finish within the grace period, idle
//! proxies stop at once, and `run` returns instead of exiting the process.

use std::time::{Duration, Instant};

use crate::common::*;

fn refused(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_stops_at_once_and_releases_its_ports() {
    let h = Harness::start().await;
    let (addr, admin) = (h.addr(), h.admin());
    // A keep-alive connection idling between requests does not hold shutdown up.
    let mut conn = Conn::open(addr).await;
    assert_eq!(conn.send("GET", "/", &[]).await.status, 404);
    let report = h.proxy.shutdown_async().await;
    assert!(report.drained, "{report:?}");
    assert!(report.took < Duration::from_secs(1), "{report:?}");
    wait_until("the listeners to close", Duration::from_secs(5), || {
        refused(addr) && refused(admin)
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), conn.closed)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_finishes_during_the_grace_period() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbdrain", 1).await;
    let addr = h.addr();
    let target = format!("/proxy/sbdrain/{}/", up.port());
    let req = tokio::spawn(async move { get(addr, &target, &[("x-test-delay-ms", "800")]).await });
    let m = h.proxy.metrics().clone();
    wait_until(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || {
            metric(
                &m.render(),
                "wrenn_proxy_upstream_connections_total{reused=\"false\"}",
            ) == 1.0
        },
    )
    .await;
    let start = Instant::now();
    let report = h.proxy.shutdown_async().await;
    let r = req.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "no keep-alive while shutting down"
    );
    assert!(report.drained, "{report:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(500) && start.elapsed() < Duration::from_secs(3)
    );
    assert!(refused(addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_running_after_the_grace_period_are_dropped() {
    let h = Harness::start_with(|c| c.grace_period_secs = 1).await;
    let up = Upstream::http().await;
    h.running("sbgrace", 1).await;
    let addr = h.addr();
    let target = format!("/proxy/sbgrace/{}/", up.port());
    let req = tokio::spawn(async move {
        let mut c = Conn::open(addr).await;
        c.try_send("GET", &target, &[("x-test-delay-ms", "10000")])
            .await
    });
    let m = h.proxy.metrics().clone();
    wait_until(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || {
            metric(
                &m.render(),
                "wrenn_proxy_upstream_connections_total{reused=\"false\"}",
            ) == 1.0
        },
    )
    .await;
    let report = h.proxy.shutdown_async().await;
    assert!(!report.drained && report.dropped == 1, "{report:?}");
    assert!(
        report.took >= Duration::from_millis(900) && report.took < Duration::from_secs(3),
        "{report:?}"
    );
    let r = tokio::time::timeout(Duration::from_secs(5), req)
        .await
        .unwrap()
        .unwrap();
    assert!(
        r.is_err(),
        "the dropped request must not look successful: {r:?}"
    );
}

#[test]
fn run_blocks_until_the_trigger_and_returns() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(FakeAgent::start());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config(&agent);
    c.listen = ([127, 0, 0, 1], port).into();
    c.admin_listen = None;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runner = std::thread::spawn(move || {
        wrenn_proxy::run(c, async move {
            let _ = rx.await;
        })
    });
    let addr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    while refused(addr) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "run() never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = rt.block_on(get(addr, "/", &[]));
    assert_eq!(r.status, 404);
    tx.send(()).unwrap();
    let report = runner.join().unwrap().unwrap();
    assert!(
        report.drained && report.took < Duration::from_secs(2),
        "{report:?}"
    );
    assert!(refused(addr));
}

#[test]
fn run_rejects_a_bad_config_naming_the_key() {
    let c = wrenn_proxy::ProxyConfig {
        domain: "bad domain".into(),
        ..Default::default()
    };
    let err = wrenn_proxy::run(c, async {}).unwrap_err();
    assert!(err.to_string().contains("`domain`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_error_and_leaves_nothing_bound() {
    let agent = FakeAgent::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap();
    drop(free);
    let mut c = config(&agent);
    c.listen = listen;
    c.admin_listen = Some(taken.local_addr().unwrap());
    // Returned, not panicked: the start-up error surfaces inside this async test.
    let err = match wrenn_proxy::Proxy::new(c).start() {
        Ok(_) => panic!("started on a port in use"),
        Err(e) => e,
    };
    let shown = format!("{err}");
    assert!(
        shown.contains("admin") && shown.contains(&taken.local_addr().unwrap().to_string()),
        "{shown}"
    );
    // The proxy listener bound before the failure is released.
    std::net::TcpListener::bind(listen).expect("the proxy port is free again");
}
