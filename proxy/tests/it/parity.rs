//! The two request paths agree: the same requests — URL forms, duplicate
//! and conflicting routing headers, odd `Host`s, absolute-form targets and
//! every error class — sent to a proxy with the fast path on and to one with
//! it off, must give the same upstream request heads and the same answers
//! (status, headers but `Date`, body). The fast path takes only what it
//! serves exactly as Pingora would; this table is what says so.

use std::sync::Arc;

use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wrenn_proto::wrenn::v1::SandboxState;

use crate::common::*;

const ID: &str = "sbxparity";
const PAUSED: &str = "sbxpaused";

/// An upstream that records every request head it reads and answers each
/// with the same small response (a `Location` and a `Set-Cookie` for the
/// proxy to rewrite), keeping the connection open.
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start() -> Recorder {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn start_on(listener: TcpListener) -> Recorder {
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(record(tcp, seen.clone()));
            }
        });
        Recorder { port, heads, task }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.heads.lock().unwrap())
    }
}

async fn record(mut tcp: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        heads
            .lock()
            .unwrap()
            .push(normalized(&String::from_utf8_lossy(&head)));
        let body = if head.starts_with(b"HEAD ") { "" } else { "ok" };
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nLocation: /next\r\nSet-Cookie: s=1; Path=/; Domain=example.com\r\nX-Upstream: yes\r\n\r\n{body}"
        );
        if tcp.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The first line, then the header lines sorted (order is not semantics).
fn normalized(head: &str) -> String {
    let mut lines = head.trim_end().split("\r\n");
    let first = lines.next().unwrap_or_default().to_owned();
    let mut rest: Vec<String> = lines
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}: {}", n.to_ascii_lowercase(), v.trim()),
            None => l.to_owned(),
        })
        .collect();
    rest.sort();
    std::iter::once(first)
        .chain(rest)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Status line, headers (sorted, `Date` left out) and body of one answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    head: String,
    body: Vec<u8>,
}

/// Sends `request` on a new connection and reads the answer to the end
/// (every request of the table says `Connection: close`).
async fn exchange(proxy: std::net::SocketAddr, request: &str) -> Answer {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut raw),
    );
    read.await
        .unwrap_or_else(|_| panic!("no end of answer to {request:?}"))
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)))
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let head = normalized(&head)
        .lines()
        .filter(|l| !l.starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\n");
    Answer {
        head,
        body: raw[split..].to_vec(),
    }
}

/// The table: (what it is, the raw request).
fn requests(port: u16, closed: u16) -> Vec<(&'static str, String)> {
    let r = |lines: &[&str]| format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    let sub = format!("{port}-{ID}.localhost");
    vec![
        (
            "path form",
            r(&[
                &format!("GET /proxy/{ID}/{port}/a?b=1 HTTP/1.1"),
                "Host: localhost:7880",
            ]),
        ),
        (
            "subdomain form",
            r(&["GET /a HTTP/1.1", &format!("Host: {sub}")]),
        ),
        ("HEAD", r(&["HEAD /a HTTP/1.1", &format!("Host: {sub}")])),
        (
            "absolute-form target",
            r(&[
                &format!("GET http://{sub}/abs?q HTTP/1.1"),
                &format!("Host: {sub}"),
            ]),
        ),
        (
            "upper-case Host",
            r(&["GET /u HTTP/1.1", &format!("Host: {}", sub.to_uppercase())]),
        ),
        (
            "Host with a port",
            r(&["GET /p HTTP/1.1", &format!("Host: {sub}:7880")]),
        ),
        (
            "client X-Forwarded-For kept first",
            r(&[
                "GET /x HTTP/1.1",
                &format!("Host: {sub}"),
                "X-Forwarded-For: 203.0.113.9",
            ]),
        ),
        (
            "hop-by-hop and forwarded headers from the client",
            r(&[
                "GET /hop HTTP/1.1",
                &format!("Host: {sub}"),
                "Keep-Alive: timeout=5",
                "Proxy-Connection: keep-alive",
                "Proxy-Authorization: Basic eDp5",
                "Trailer: X-Checksum",
                "X-Forwarded-Host: evil.example.com",
                "X-Forwarded-Proto: https",
                "X-Forwarded-Prefix: /evil",
            ]),
        ),
        (
            "header routing",
            r(&[
                "GET /h HTTP/1.1",
                "Host: localhost",
                &format!("Wrenn-Sandbox-Id: {ID}"),
                &format!("Wrenn-Sandbox-Port: {port}"),
            ]),
        ),
        (
            "E2B header routing",
            r(&[
                "GET /e HTTP/1.1",
                "Host: localhost",
                &format!("E2b-Sandbox-Id: {ID}"),
                &format!("E2b-Sandbox-Port: {port}"),
            ]),
        ),
        (
            "Wrenn headers win over E2B's",
            r(&[
                "GET /w HTTP/1.1",
                "Host: localhost",
                "E2b-Sandbox-Id: nosuchbox",
                &format!("E2b-Sandbox-Port: {port}"),
                &format!("Wrenn-Sandbox-Id: {ID}"),
                &format!("Wrenn-Sandbox-Port: {port}"),
            ]),
        ),
        (
            "Wrenn-Sandbox-Id twice, same value",
            r(&[
                "GET /d HTTP/1.1",
                "Host: localhost",
                &format!("Wrenn-Sandbox-Id: {ID}"),
                &format!("Wrenn-Sandbox-Id: {ID}"),
                &format!("Wrenn-Sandbox-Port: {port}"),
            ]),
        ),
        (
            "Wrenn-Sandbox-Id twice, two sandboxes",
            r(&[
                "GET /d HTTP/1.1",
                "Host: localhost",
                "Wrenn-Sandbox-Id: nosuchbox",
                &format!("Wrenn-Sandbox-Id: {ID}"),
                &format!("Wrenn-Sandbox-Port: {port}"),
            ]),
        ),
        (
            "E2b-Sandbox-Port twice",
            r(&[
                "GET /d HTTP/1.1",
                "Host: localhost",
                &format!("E2b-Sandbox-Id: {ID}"),
                "E2b-Sandbox-Port: 1",
                &format!("E2b-Sandbox-Port: {port}"),
            ]),
        ),
        (
            "a Host this proxy does not answer (421)",
            r(&["GET / HTTP/1.1", "Host: evil.example.com"]),
        ),
        (
            "no sandbox in the URL (404)",
            r(&["GET / HTTP/1.1", "Host: localhost"]),
        ),
        (
            "unknown sandbox (404)",
            r(&[
                "GET / HTTP/1.1",
                &format!("Host: {port}-nosuchbox.localhost"),
            ]),
        ),
        (
            "unknown sandbox, browser (HTML)",
            r(&[
                "GET / HTTP/1.1",
                &format!("Host: {port}-nosuchbox.localhost"),
                "Accept: text/html",
                "Sec-Fetch-Mode: navigate",
            ]),
        ),
        (
            "the guest agent's port (403)",
            r(&["GET / HTTP/1.1", &format!("Host: 49983-{ID}.localhost")]),
        ),
        (
            "a bad port (400)",
            r(&["GET / HTTP/1.1", &format!("Host: 0-{ID}.localhost")]),
        ),
        (
            "path form without the slash (308)",
            r(&[
                &format!("GET /proxy/{ID}/{port} HTTP/1.1"),
                "Host: localhost",
            ]),
        ),
        (
            "paused sandbox (409)",
            r(&[
                "GET / HTTP/1.1",
                &format!("Host: {port}-{PAUSED}.localhost"),
            ]),
        ),
        (
            "nothing listening (502)",
            r(&["GET / HTTP/1.1", &format!("Host: {closed}-{ID}.localhost")]),
        ),
        // No blank line yet, and already not a request head: the listener answers.
        (
            "bytes that are not HTTP (400)",
            "SSH-2.0-OpenSSH_9.2\r\n".into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_on_and_off_give_the_same_upstream_heads_and_answers() {
    let upstream = Recorder::start().await;
    let closed = unused_port();
    let fast = Harness::start_with(|c| c.fast_path = true).await;
    let slow = Harness::start_with(|c| c.fast_path = false).await;
    for h in [&fast, &slow] {
        h.running(ID, 1).await;
        h.announce(PAUSED, "127.0.0.1", SandboxState::Paused, 1)
            .await;
    }
    for (what, request) in requests(upstream.port, closed) {
        let a = exchange(fast.addr(), &request).await;
        let fast_heads = upstream.take();
        let b = exchange(slow.addr(), &request).await;
        let slow_heads = upstream.take();
        assert_eq!(fast_heads, slow_heads, "{what}: upstream heads differ");
        assert_eq!(a, b, "{what}: answers differ");
    }
    // The table exercises both paths: the plain GETs and HEADs to the
    // running sandbox (10 of the table) went the fast way on one proxy only.
    let m = fast.proxy.metrics().clone();
    wait_until(
        "10 fast-path requests",
        std::time::Duration::from_secs(5),
        || metric(&m.render(), FAST_REQUESTS) >= 10.0,
    )
    .await;
    assert_eq!(slow.metric(FAST_REQUESTS), 0.0);
}

const FAST_REQUESTS: &str = "wrenn_proxy_fast_path_requests_total";

/// The envd port's rule (`src/pipeline/envd.rs`) on both paths: what passes
/// reaches the sandbox with the same head, what does not gets the same 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envd_port_rule_is_the_same_on_both_paths() {
    const ENVD: &str = "sbxenvd";
    let (listener, addr) = envd_listener(3).await;
    let upstream = Recorder::start_on(listener);
    let fast = Harness::start_with(|c| c.fast_path = true).await;
    let slow = Harness::start_with(|c| c.fast_path = false).await;
    for h in [&fast, &slow] {
        h.announce(ENVD, &addr, SandboxState::Running, 1).await;
    }
    let r = |lines: &[&str]| format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    let sub = format!("Host: 49983-{ENVD}.localhost");
    let (id, port) = (
        format!("E2b-Sandbox-Id: {ENVD}"),
        "E2b-Sandbox-Port: 49983".to_owned(),
    );
    let token = "X-Access-Token: 0123456789abcdef";
    let passes = [
        r(&["GET /files?path=a HTTP/1.1", &sub, token]),
        r(&["HEAD /files?path=a HTTP/1.1", &sub, token]),
        r(&["GET / HTTP/1.1", "Host: localhost", &id, &port, token]),
        r(&["GET /health HTTP/1.1", &sub]),
        r(&[
            &format!("GET /proxy/{ENVD}/49983/health HTTP/1.1"),
            "Host: localhost",
        ]),
        r(&["GET /files?path=a&signature=v1_x HTTP/1.1", &sub]),
        r(&[
            "POST /process.Process/List HTTP/1.1",
            &sub,
            token,
            "Content-Type: application/json",
            "Content-Length: 2",
        ])
        .replace("\r\n\r\n", "\r\n\r\n{}"),
    ];
    let refused = [
        r(&["GET / HTTP/1.1", &sub]),
        r(&["GET /files?path=a HTTP/1.1", &sub, "X-Access-Token: "]),
        r(&["HEAD /health HTTP/1.1", &sub]),
        r(&["GET / HTTP/1.1", "Host: localhost", &id, &port]),
        r(&[
            &format!("GET /proxy/{ENVD}/49983/files?path=a HTTP/1.1"),
            "Host: localhost",
            "Accept: text/html",
        ]),
        r(&[
            "POST /wrenn.v1.Guest/Assign HTTP/1.1",
            &sub,
            "Content-Type: application/grpc",
            "Content-Length: 0",
        ]),
    ];
    for (request, pass) in passes
        .iter()
        .map(|q| (q, true))
        .chain(refused.iter().map(|q| (q, false)))
    {
        let a = exchange(fast.addr(), request).await;
        let fast_heads = upstream.take();
        let b = exchange(slow.addr(), request).await;
        let slow_heads = upstream.take();
        assert_eq!(fast_heads, slow_heads, "{request:?}: upstream heads differ");
        assert_eq!(a, b, "{request:?}: answers differ");
        if pass {
            assert_eq!(fast_heads.len(), 1, "{request:?} reached the sandbox");
            assert!(
                a.head.starts_with("HTTP/1.1 200"),
                "{request:?}: {}",
                a.head
            );
        } else {
            assert!(
                fast_heads.is_empty(),
                "{request:?} must not reach the sandbox"
            );
            assert!(
                a.head.starts_with("HTTP/1.1 403"),
                "{request:?}: {}",
                a.head
            );
            assert!(a.head.contains("wrenn-error: port_denied"), "{}", a.head);
        }
    }
    // The SDK's GETs to envd (6 of the table) take the fast path.
    let m = fast.proxy.metrics().clone();
    wait_until(
        "6 fast-path requests",
        std::time::Duration::from_secs(5),
        || metric(&m.render(), FAST_REQUESTS) >= 6.0,
    )
    .await;
    assert_eq!(slow.metric(FAST_REQUESTS), 0.0);
}
