//! The namespace fast path (issue 7 §2, §3) through the real proxy: apps bound
//! to `127.0.0.1`, `::1` or `0.0.0.0` inside a network namespace laid out like
//! a sandbox's, routed by a netns the (fake) agent reports. Root only.

mod app;
mod testnet;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wrenn_proto::wrenn::v1::SandboxState;
use wrenn_proto::wrenn::v1::sandbox_event::Kind;
use wrenn_proxy::{ProxyConfig, UpstreamConnect};

use crate::common::*;
use app::App;
use testnet::TestNet;

/// Announces sandbox `id` living in `net` (address and netns) and waits for its route.
async fn announce(h: &Harness, id: &str, net: &TestNet) {
    let mut sb = sandbox(id, &net.addr.to_string(), SandboxState::Running, 1);
    sb.netns = net.path.display().to_string();
    h.agent.emit(Kind::Running, sb);
    let routes = h.proxy.routes().clone();
    wait_until(&format!("route {id}"), Duration::from_secs(5), || {
        routes.get(id).is_some_and(|r| r.netns.is_some())
    })
    .await;
}

async fn harness(connect: UpstreamConnect) -> Harness {
    Harness::start_with(|c: &mut ProxyConfig| c.upstream_connect = connect).await
}

fn path_form(id: &str, port: u16) -> String {
    format!("/proxy/{id}/{port}/hello")
}

fn subdomain_host(h: &Harness, id: &str, port: u16) -> String {
    format!("{port}-{id}.localhost:{}", h.addr().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_localhost_app_answers_in_both_url_forms_the_moment_it_listens() {
    let net = TestNet::new(8100);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sblo", &net).await;
    let app = App::serve(net.listen(net.loopback(0)), false);
    let listening = Instant::now();
    let r = get(h.addr(), &path_form("sblo", app.port()), &[]).await;
    let first = listening.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["peer"],
        "127.0.0.1",
        "reached on the sandbox's loopback"
    );
    assert_eq!(r.json()["target"], "/hello");
    assert_eq!(
        h.metric("wrenn_proxy_connect_attempts_total"),
        1.0,
        "no retry needed: reachable as soon as it listens"
    );
    let host = subdomain_host(&h, "sblo", app.port());
    let r = get(h.addr(), "/hello", &[("host", &host)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["peer"], "127.0.0.1");
    println!("listen → first answer through the proxy: {first:?}");
    assert!(first < Duration::from_secs(1), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn apps_on_the_sandbox_address_and_on_v6_loopback_are_reached_too() {
    let net = TestNet::new(8101);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sbany", &net).await;
    // 0.0.0.0: dialled from the host as before (the app sees the gateway).
    let any = App::serve(
        net.listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
        false,
    );
    let r = get(h.addr(), &path_form("sbany", any.port()), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["peer"], net.host.to_string());
    // ::1 only (Node's `localhost`).
    let v6 = App::serve(
        net.listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)),
        false,
    );
    let r = get(h.addr(), &path_form("sbany", v6.port()), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["peer"], "::1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn without_the_fast_path_a_localhost_app_is_unreachable() {
    // The control: the same app, `upstream_connect = direct`.
    let net = TestNet::new(8102);
    let h = harness(UpstreamConnect::Direct).await;
    announce(&h, "sbdirect", &net).await;
    let app = App::serve(net.listen(net.loopback(0)), false);
    let r = get(
        h.addr(),
        &path_form("sbdirect", app.port()),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "port_closed");
    assert_eq!(app.accepted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_port_not_listening_yet_keeps_the_three_attempt_retry() {
    let net = TestNet::new(8103);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sblate", &net).await;
    // Reserve a port inside, then free it: nothing listens there.
    let port = net.listen(net.loopback(0)).local_addr().unwrap().port();
    let start = Instant::now();
    let r = get(
        h.addr(),
        &path_form("sblate", port),
        &[("accept", "application/json")],
    )
    .await;
    let took = start.elapsed();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "port_closed");
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), 3.0);
    assert_eq!(h.metric("wrenn_proxy_connect_retries_total"), 2.0);
    assert!(took >= Duration::from_millis(300), "two backoffs: {took:?}");

    // An app that starts listening during the backoff is reached by a retry.
    let late = {
        let listener = net.listen(net.loopback(port));
        drop(listener);
        let path = net.path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let s = wrenn_proxy::netns::Home::current()
                .unwrap()
                .socket_in(&path, false)
                .unwrap();
            s.set_reuseaddr(true).unwrap();
            s.bind(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
            App::serve(s.listen(128).unwrap(), false)
        })
    };
    let r = get(h.addr(), &path_form("sblate", port), &[]).await;
    let _app = late.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), 3.0 + 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn stopping_the_app_answers_502_again() {
    let net = TestNet::new(8104);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sbstop", &net).await;
    let app = App::serve(net.listen(net.loopback(0)), false);
    let port = app.port();
    let mut conn = Conn::open(h.addr()).await;
    assert_eq!(
        conn.send("GET", &path_form("sbstop", port), &[])
            .await
            .status,
        200
    );
    drop(app);
    let r = conn
        .send(
            "GET",
            &path_form("sbstop", port),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "port_closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_hundred_sequential_connects_all_succeed() {
    let net = TestNet::new(8105);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sbseq", &net).await;
    // The app closes every connection: each request is a new upstream connect.
    let app = App::serve(net.listen(net.loopback(0)), true);
    let mut conn = Conn::open(h.addr()).await;
    for i in 0..100 {
        let r = conn.send("GET", &path_form("sbseq", app.port()), &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(app.accepted(), 100, "one upstream connection per request");
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_websocket_to_a_localhost_app_works() {
    let net = TestNet::new(8106);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sbws", &net).await;
    let app = App::websocket(net.listen(net.loopback(0)));
    let host = format!("localhost:{}", h.addr().port());
    let tcp = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let url = format!("ws://{host}/proxy/sbws/{}/socket", app.port());
    let req = url.into_client_request().unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "from the host"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time");
        assert_eq!(back.unwrap().unwrap(), Message::text(text));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn pooled_connections_do_not_keep_a_destroyed_sandboxs_namespace() {
    let net = TestNet::new(8107);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sbgone", &net).await;
    let app = App::serve(net.listen(net.loopback(0)), false);
    for _ in 0..3 {
        let r = get(h.addr(), &path_form("sbgone", app.port()), &[]).await;
        assert_eq!(r.status, 200);
    }
    // The proxy now pools an idle upstream socket made inside the namespace.
    // Destroying a sandbox kills its apps and removes its netns: the pooled
    // socket must not keep the namespace (and its veth) alive.
    drop(app);
    net.delete_netns();
    let start = Instant::now();
    wait_until(
        "the veth to go with the netns",
        Duration::from_secs(3),
        || !net.link_exists(),
    )
    .await;
    println!("namespace freed {:?} after its deletion", start.elapsed());
    h.destroy("sbgone", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_vanished_namespace_answers_quickly_instead_of_hanging() {
    let h = harness(UpstreamConnect::Netns).await;
    let mut sb = sandbox("sbvanished", "", SandboxState::Running, 1);
    sb.netns = "/run/netns/wrenn-tf-8199-missing".into();
    h.agent.emit(Kind::Running, sb);
    let routes = h.proxy.routes().clone();
    wait_until("route", Duration::from_secs(5), || {
        routes.get("sbvanished").is_some()
    })
    .await;
    let start = Instant::now();
    let r = get(
        h.addr(),
        "/proxy/sbvanished/8000/",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "sandbox_unreachable");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn connections_to_a_localhost_app_are_pooled() {
    let net = TestNet::new(8108);
    let h = harness(UpstreamConnect::Netns).await;
    announce(&h, "sbpool", &net).await;
    let app = App::serve(net.listen(net.loopback(0)), false);
    for i in 0..20 {
        let r = get(h.addr(), &path_form("sbpool", app.port()), &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // The first connect finds the app on loopback; from then on peers name
    // loopback, so Pingora hands the pooled socket back. Each of the
    // proxy's two threads has its own pool.
    assert!(
        app.accepted() <= 4,
        "{} upstream connections for 20 requests",
        app.accepted()
    );
}
