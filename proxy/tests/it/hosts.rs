//! `Host` checks (DNS rebinding): both listeners answer 421 to a `Host` that
//! is not theirs, on both proxy paths, before any routing.

use std::net::IpAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const FAST: &str = "wrenn_proxy_fast_path_requests_total";

/// A non-loopback IPv4 address of this machine, if it has one.
fn own_address() -> Option<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
        .find(|ip| !ip.is_loopback())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_421_to_foreign_hosts_on_both_paths() {
    for fast_path in [true, false] {
        let h = Harness::start_with(|c| {
            c.fast_path = fast_path;
            c.domain = "sb.example.com".into();
        })
        .await;
        let up = Upstream::http().await;
        h.running("sbhost", 1).await;
        let p = up.port();
        let target = format!("/proxy/sbhost/{p}/");
        let port = h.addr().port();

        // Its own names and addresses, any port.
        let mut allowed = vec![
            format!("localhost:{port}"),
            "localhost".to_owned(),
            format!("127.0.0.1:{port}"),
            "127.0.0.2".to_owned(),
            format!("[::1]:{port}"),
            "sb.example.com:80".to_owned(),
            "anything.localhost".to_owned(),
        ];
        if let Some(ip) = own_address() {
            allowed.push(format!("{ip}:{port}"));
            allowed.push(ip.to_string());
        }
        for host in &allowed {
            let r = get(h.addr(), &target, &[("host", host)]).await;
            assert_eq!(r.status, 200, "fast_path {fast_path}, {host}: {}", r.text());
        }
        // Subdomain and header forms.
        let r = get(
            h.addr(),
            "/",
            &[("host", &format!("{p}-sbhost.sb.example.com"))],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let pstr = p.to_string();
        let r = get(
            h.addr(),
            "/",
            &[("e2b-sandbox-id", "sbhost"), ("e2b-sandbox-port", &pstr)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let served = up.accepted();
        let fast_before = h.metric(FAST);

        // Foreign names (a rebound DNS name), other machines' addresses,
        // malformed values: 421, JSON naming the host...
        for host in [
            "rebound.example",
            "rebound.example:7880",
            "localhost.rebound.example",
            "sb.example.com.rebound.example",
            "192.0.2.1",
            "0.0.0.0",
            "localhost:http",
        ] {
            let r = get(h.addr(), &target, &[("host", host)]).await;
            assert_eq!(r.status, 421, "fast_path {fast_path}, {host}: {}", r.text());
            assert_eq!(r.header("wrenn-error"), Some("host_not_allowed"));
            let e = &r.json()["error"];
            assert_eq!(e["code"], "host_not_allowed");
            assert_eq!(
                e["message"],
                format!("host {host:?} is not served by this proxy")
            );
        }
        // ... a page for a browser, for every URL form and method.
        let r = get(
            h.addr(),
            &target,
            &[("host", "rebound.example"), ("accept", "text/html")],
        )
        .await;
        assert_eq!(r.status, 421);
        assert!(
            r.text().contains("<h1>421 Misdirected Request</h1>"),
            "{}",
            r.text()
        );
        assert!(
            r.text().contains("<code>allowed_hosts</code>"),
            "{}",
            r.text()
        );
        let r = get(
            h.addr(),
            "/",
            &[
                ("host", "rebound.example"),
                ("e2b-sandbox-id", "sbhost"),
                ("e2b-sandbox-port", &pstr),
            ],
        )
        .await;
        assert_eq!(r.status, 421, "header routing needs an allowed Host too");
        let r = get(
            h.addr(),
            "/",
            &[
                ("host", "192.0.2.1"),
                ("wrenn-sandbox-id", "sbhost"),
                ("wrenn-sandbox-port", &pstr),
            ],
        )
        .await;
        assert_eq!(r.status, 421);
        let r = Conn::open(h.addr())
            .await
            .send("POST", &target, &[("host", "rebound.example")])
            .await;
        assert_eq!(r.status, 421);
        // An absolute-form target naming a foreign host, without a Host
        // (Pingora itself refuses a Host that differs from it, with 400).
        let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
        let req =
            format!("GET http://rebound.example{target} HTTP/1.1\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut all = String::new();
        tcp.read_to_string(&mut all).await.unwrap();
        assert!(all.starts_with("HTTP/1.1 421 "), "{all}");

        h.wait_metric("wrenn_proxy_errors_total{class=\"host_not_allowed\"}", 12.0)
            .await;
        assert_eq!(up.accepted(), served, "nothing reached the sandbox");
        assert_eq!(h.metric(FAST), fast_before, "421s are Pingora's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_adds_names_wildcards_and_addresses() {
    for fast_path in [true, false] {
        let h = Harness::start_with(|c| {
            c.fast_path = fast_path;
            c.allowed_hosts = vec![
                "proxy.internal".into(),
                "*.apps.internal".into(),
                "203.0.113.5:7880".into(),
            ];
        })
        .await;
        let up = Upstream::http().await;
        h.running("sballow", 1).await;
        let target = format!("/proxy/sballow/{}/", up.port());
        for (host, status) in [
            ("proxy.internal", 200),
            ("PROXY.internal:9999", 200),
            ("a.apps.internal", 200),
            ("apps.internal", 421),
            ("203.0.113.5:7880", 200),
            ("203.0.113.5", 421),
            ("203.0.113.5:7881", 421),
            ("x.proxy.internal", 421),
        ] {
            let r = get(h.addr(), &target, &[("host", host)]).await;
            assert_eq!(
                r.status,
                status,
                "fast_path {fast_path}, {host}: {}",
                r.text()
            );
        }
        // The admin listener takes them too, and nothing else of the proxy's.
        for (host, status) in [
            ("proxy.internal:7881", 200),
            ("b.apps.internal", 200),
            ("localhost", 200),
            ("127.0.0.1:7881", 200),
            ("x.localhost", 421),
            ("rebound.example", 421),
        ] {
            let r = get(h.admin(), "/healthz", &[("host", host)]).await;
            assert_eq!(r.status, status, "admin, {host}: {}", r.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_421_to_foreign_hosts() {
    let h = Harness::start().await;
    let port = h.admin().port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        for path in ["/metrics", "/healthz", "/readyz"] {
            let r = get(h.admin(), path, &[("host", &host)]).await;
            assert_eq!(r.status, 200, "{host}{path}");
        }
    }
    if let Some(ip) = own_address() {
        let r = get(h.admin(), "/healthz", &[("host", &ip.to_string())]).await;
        assert_eq!(r.status, 200, "{ip}");
    }
    for host in [
        "rebound.example",
        "8000-sb.localhost",
        "localhost.rebound.example",
        "192.0.2.1:7881",
    ] {
        for path in ["/metrics", "/routes", "/readyz"] {
            let r = get(h.admin(), path, &[("host", host)]).await;
            assert_eq!(r.status, 421, "{host}{path}: {}", r.text());
            assert!(
                r.text().contains(&format!("host {host:?} is not served")),
                "{}",
                r.text()
            );
            assert!(!r.text().contains("wrenn_proxy"), "no metrics leak");
        }
    }
}
