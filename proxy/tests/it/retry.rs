//! Connect retry: 3 attempts, 100 ms then 200 ms apart, connect failures only.

use std::time::{Duration, Instant};

use tokio::net::TcpSocket;

use crate::common::*;

/// A loopback port nothing listens on (bound once, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_binds_250ms_late_is_reached_on_the_third_attempt() {
    let h = Harness::start().await;
    h.running("sblate", 1).await;
    let port = free_port();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = TcpSocket::new_v4().unwrap();
        s.set_reuseaddr(true).unwrap();
        s.bind(([127, 0, 0, 1], port).into()).unwrap();
        Upstream::http_on(s.listen(128).unwrap())
    });
    let start = Instant::now();
    let r = get(h.addr(), &format!("/proxy/sblate/{port}/hello/?q=1"), &[]).await;
    let took = start.elapsed();
    let _up = late.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/hello/?q=1");
    assert!(
        took >= Duration::from_millis(300),
        "two backoffs (100 + 200 ms) before success: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), 3.0);
    assert_eq!(h.metric("wrenn_proxy_connect_retries_total"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_port_answers_502_after_exactly_three_attempts() {
    let h = Harness::start().await;
    h.running("sbdead", 1).await;
    let port = free_port();
    let start = Instant::now();
    let r = get(
        h.addr(),
        &format!("/proxy/sbdead/{port}/"),
        &[("accept", "application/json")],
    )
    .await;
    let took = start.elapsed();
    assert_eq!(r.status, 502);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "port_closed");
    assert_eq!(
        e["message"],
        format!("sandbox sbdead is running but nothing listens on port {port}")
    );
    assert_eq!(e["port"], port);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), 3.0);
    assert_eq!(h.metric("wrenn_proxy_connect_retries_total"), 2.0);
    h.wait_metric("wrenn_proxy_errors_total{class=\"port_closed\"}", 1.0)
        .await;

    // The HTML page says what to do.
    let r = get(
        h.addr(),
        &format!("/proxy/sbdead/{port}/"),
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("--bind 0.0.0.0"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_upstream_times_out_per_attempt_instead_of_hanging() {
    let h = Harness::start_with(|c| c.connect_timeout_ms = 200).await;
    h.running("sbhole", 1).await;
    // A listener with a zero backlog whose one queue slot is taken: the kernel
    // drops further SYNs, as for a sandbox whose network vanished.
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = s.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _filler = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let start = Instant::now();
    let r = get(h.addr(), &format!("/proxy/sbhole/{port}/"), &[]).await;
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "sandbox_unreachable");
    // 3 × 200 ms connect timeouts + 300 ms of backoff.
    assert!(
        took >= Duration::from_millis(850) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), 3.0);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_destroyed_during_the_backoff_answers_404_without_another_attempt() {
    let h = Harness::start_with(|c| c.connect_backoff_ms = 400).await;
    h.running("sbgone", 1).await;
    let port = free_port();
    let req = tokio::spawn({
        let addr = h.addr();
        async move { get(addr, &format!("/proxy/sbgone/{port}/"), &[]).await }
    });
    let m = h.proxy.metrics().clone();
    wait_until("the first failed attempt", Duration::from_secs(5), || {
        metric(&m.render(), "wrenn_proxy_connect_attempts_total") == 1.0
    })
    .await;
    h.destroy("sbgone", 1).await;
    let r = req.await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "sandbox_not_found");
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), 1.0);
}
