//! Client-side hardening: the request-header deadline, keep-alive limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends `head` one byte per `every` until the server closes; returns how
/// long after connecting the close came (`None`: still open at `give_up`).
async fn trickle(
    addr: std::net::SocketAddr,
    head: &'static [u8],
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut tick = tokio::time::interval(every);
    let mut buf = [0u8; 256];
    let mut sent = 0;
    loop {
        tokio::select! {
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(start.elapsed()),
                Ok(_) => panic!("the proxy answered an incomplete request"),
            },
            _ = tick.tick() => {
                if start.elapsed() > give_up {
                    return None;
                }
                if sent < head.len() {
                    if tcp.write_all(&head[sent..=sent]).await.is_err() {
                        return Some(start.elapsed());
                    }
                    sent += 1;
                }
            }
        }
    }
}

const SLOW_HEAD: &[u8] =
    b"GET /proxy/sbslow/80/ HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_header_clients_are_closed_at_the_deadline_and_delay_no_one() {
    let h = Harness::start().await; // header_timeout_secs: the default 10 s
    let up = Upstream::http().await;
    h.running("sbslow", 1).await;
    let slow: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn(trickle(
                h.addr(),
                SLOW_HEAD,
                Duration::from_secs(1),
                Duration::from_secs(20),
            ))
        })
        .collect();
    let m = h.proxy.metrics().clone();
    wait_until("1000 slow connections", Duration::from_secs(10), || {
        metric(&m.render(), "wrenn_proxy_client_connections_total") >= 1000.0
    })
    .await;

    // Meanwhile ordinary clients are served promptly.
    let target = format!("/proxy/sbslow/{}/", up.port());
    let mut worst = Duration::ZERO;
    let mut served = 0;
    let until = Instant::now() + Duration::from_secs(11);
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(get(h.addr(), &target, &[]).await.status, 200);
        worst = worst.max(t.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < Duration::from_secs(1),
        "an ordinary request took {worst:?}"
    );

    let mut closed = Vec::new();
    for t in slow {
        closed.push(t.await.unwrap().expect("slow client still open after 20 s"));
    }
    let (min, max) = (closed.iter().min().unwrap(), closed.iter().max().unwrap());
    assert!(
        *min >= Duration::from_millis(9500),
        "closed too early: {min:?}"
    );
    assert!(*max <= Duration::from_secs(13), "closed too late: {max:?}");
    assert_eq!(h.metric("wrenn_proxy_header_timeouts_total"), 1000.0);
    assert!(served >= 50, "only {served} ordinary requests in 11 s");
    wait_until(
        "every slow connection released",
        Duration::from_secs(5),
        || metric(&m.render(), "wrenn_proxy_client_connections") == 0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_is_not_cut_by_the_header_deadline_but_a_slow_next_request_is() {
    let h = Harness::start_with(|c| c.header_timeout_secs = 1).await;
    let up = Upstream::http().await;
    h.running("sbka", 1).await;
    let target = format!("/proxy/sbka/{}/", up.port());
    let mut conn = Conn::open(h.addr()).await;
    assert_eq!(conn.send("GET", &target, &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        conn.send("GET", &target, &[]).await.status,
        200,
        "idle for 2.5 s > header deadline"
    );

    // On a kept-alive connection, the next request's header gets 1 s from its first byte.
    let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // idle: fine
    let start = Instant::now();
    tcp.write_all(b"GET / HT").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the slow second request was not cut");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "{closed:?}"
    );
    assert_eq!(h.metric("wrenn_proxy_header_timeouts_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_serves_at_most_keepalive_requests() {
    let h = Harness::start_with(|c| c.keepalive_requests = 3).await;
    let up = Upstream::http().await;
    h.running("sbcapreq", 1).await;
    let target = format!("/proxy/sbcapreq/{}/", up.port());
    let mut conn = Conn::open(h.addr()).await;
    let mut served = 0;
    for _ in 0..5 {
        match conn.try_send("GET", &target, &[]).await {
            Ok(r) if r.status == 200 => served += 1,
            _ => break,
        }
    }
    assert_eq!(served, 3);
    assert_eq!(h.metric("wrenn_proxy_client_connections_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sequential_requests_on_one_connection_keep_working() {
    // Guards the re-arming: every request's header is read well within the deadline.
    let h = Harness::start_with(|c| c.header_timeout_secs = 1).await;
    let up = Arc::new(Upstream::http().await);
    h.running("sbmany", 1).await;
    let target = format!("/proxy/sbmany/{}/", up.port());
    let mut conn = Conn::open(h.addr()).await;
    for _ in 0..200 {
        assert_eq!(conn.send("GET", &target, &[]).await.status, 200);
    }
    assert_eq!(h.metric("wrenn_proxy_header_timeouts_total"), 0.0);
}

/// Writes `head` on a new connection and reads until the proxy closes it.
async fn raw(addr: std::net::SocketAddr, head: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut all))
        .await
        .expect("the proxy closes the connection after its answer")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

/// A request head with `fields` header fields and a cookie of `cookie` bytes.
fn head_with(method: &str, target: &str, extra: &str, fields: usize, cookie: usize) -> Vec<u8> {
    let mut h = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n{extra}").into_bytes();
    for i in 0..fields {
        h.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
    }
    if cookie > 0 {
        h.extend_from_slice(b"Cookie: c=");
        h.extend(std::iter::repeat_n(b'a', cookie));
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_64_kib_or_256_fields_get_431_and_the_proxy_keeps_serving() {
    for fast_path in [true, false] {
        let h = Harness::start_with(|c| c.fast_path = fast_path).await;
        let up = Upstream::http().await;
        h.running("sbbighead", 1).await;
        let target = format!("/proxy/sbbighead/{}/x?q=1", up.port());

        // Just under the limit: served (the fast path takes heads of any
        // size up to it, Pingora the rest).
        let cookie = 64 * 1024 - 200;
        let under = head_with("GET", &target, "Connection: close\r\n", 0, cookie);
        assert!(under.len() <= 64 * 1024);
        let r = raw(h.addr(), &under).await;
        assert!(
            r.starts_with("HTTP/1.1 200 "),
            "fast_path {fast_path}: {r:.300}"
        );
        let under = head_with(
            "POST",
            &target,
            "Content-Length: 0\r\nConnection: close\r\n",
            0,
            cookie,
        );
        let r = raw(h.addr(), &under).await;
        assert!(
            r.starts_with("HTTP/1.1 200 "),
            "fast_path {fast_path}: {r:.300}"
        );

        // Over it, GET or POST, complete or not: 431 naming the limit, JSON...
        let over = head_with("GET", &target, "", 0, 70 * 1024);
        let mut cut = over.clone();
        cut.truncate(over.len() - 4); // no blank line yet
        let post = head_with("POST", &target, "Content-Length: 0\r\n", 0, 70 * 1024);
        for (what, head) in [("complete", &over), ("unfinished", &cut), ("POST", &post)] {
            let r = raw(h.addr(), head).await;
            assert!(
                r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
                "fast_path {fast_path}, {what}: {r:.300}"
            );
            let lower = r.to_ascii_lowercase();
            assert!(lower.contains("wrenn-error: headers_too_large\r\n"), "{r}");
            assert!(lower.contains("connection: close\r\n"), "{r}");
            assert!(lower.contains("content-type: application/json\r\n"), "{r}");
            let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
            let j: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(j["error"]["code"], "headers_too_large");
            assert!(
                j["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("larger than 64 KiB"),
                "{j}"
            );
        }
        // ... or a page for a browser; no body for HEAD.
        let page = head_with("GET", &target, "Accept: text/html\r\n", 0, 70 * 1024);
        let r = raw(h.addr(), &page).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r:.300}");
        assert!(
            r.to_ascii_lowercase().contains("content-type: text/html"),
            "{r:.300}"
        );
        assert!(
            r.contains("<h1>431 Request Header Fields Too Large</h1>"),
            "{r}"
        );
        let r = raw(h.addr(), &head_with("HEAD", &target, "", 0, 70 * 1024)).await;
        assert!(
            r.starts_with("HTTP/1.1 431 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );

        // Small, but too many fields: Pingora's limit, answered the same way.
        // (`head_with` adds Host.)
        let close = "Connection: close\r\n";
        let r = raw(h.addr(), &head_with("GET", &target, close, 254, 0)).await;
        assert!(r.starts_with("HTTP/1.1 200 "), "256 fields: {r:.300}");
        let r = raw(h.addr(), &head_with("GET", &target, "", 256, 0)).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "257 fields: {r:.300}");
        assert!(r.contains("more than 256 header fields"), "{r}");

        // The proxy keeps serving, on new and kept-alive connections.
        let mut conn = Conn::open(h.addr()).await;
        for _ in 0..3 {
            assert_eq!(conn.send("GET", &target, &[]).await.status, 200);
        }
        assert_eq!(
            h.metric("wrenn_proxy_errors_total{class=\"headers_too_large\"}"),
            6.0
        );
        assert!(up.accepted() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_head_after_a_good_request_on_one_connection_gets_431() {
    for fast_path in [true, false] {
        let h = Harness::start_with(|c| c.fast_path = fast_path).await;
        let up = Upstream::http().await;
        h.running("sbkahead", 1).await;
        let target = format!("/proxy/sbkahead/{}/", up.port());
        let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
        tcp.write_all(&head_with("GET", &target, "", 0, 0))
            .await
            .unwrap();
        // The echo server's JSON body ends the response.
        let mut first = Vec::new();
        while !first.ends_with(b"}") {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after the first request");
            first.extend_from_slice(&buf[..n]);
        }
        let first = String::from_utf8_lossy(&first);
        assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
        tcp.write_all(&head_with("GET", &target, "", 0, 80 * 1024))
            .await
            .unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
            .await
            .expect("closed after the 431")
            .unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.starts_with("HTTP/1.1 431 "),
            "fast_path {fast_path}: {rest:.300}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_cannot_start_an_http_head_get_400_and_a_close() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbnothttp", 1).await;
    // A TLS ClientHello and an SSH banner: no blank line yet, and already
    // not an HTTP/1.x request head. Answered at once, not after the header
    // deadline (10 s here).
    for bytes in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ] {
        let start = Instant::now();
        let r = raw(h.addr(), bytes).await;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(r.starts_with("HTTP/1.1 400 "), "{r:.300}");
        assert!(r.contains("not HTTP/1.x"), "{r}");
        assert!(r.contains("connection: close\r\n"), "{r}");
    }
    assert_eq!(
        h.metric("wrenn_proxy_errors_total{class=\"bad_request\"}"),
        2.0
    );
    let target = format!("/proxy/sbnothttp/{}/", up.port());
    let mut conn = Conn::open(h.addr()).await;
    assert_eq!(conn.send("GET", &target, &[]).await.status, 200);
}
