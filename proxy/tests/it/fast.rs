//! The plain GET/HEAD fast path (`fast.rs`): which requests take it, and
//! every response framing passing through it byte for byte, against an
//! upstream that writes exact bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

const FAST: &str = "wrenn_proxy_fast_path_requests_total";

/// An upstream answering by path with fixed bytes; `X-Conn` numbers its
/// connections, so a test sees when the proxy reused one.
struct Scripted {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve_scripted(tcp, n));
            }
        });
        Scripted { port, task }
    }
}

async fn serve_scripted(mut tcp: TcpStream, conn: usize) {
    let mut buf = Vec::new();
    loop {
        let (method, path, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                break (
                    req.method.unwrap().to_owned(),
                    req.path.unwrap().to_owned(),
                    len,
                );
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..len);
        let name = path.rsplit('/').next().unwrap_or("");
        let reply = match name {
            "chunked" => format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Conn: {conn}\r\n\r\n\
                 5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
            ),
            "length" if method == "HEAD" => {
                format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Conn: {conn}\r\n\r\n")
            }
            "length" => format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Conn: {conn}\r\n\r\nok"),
            "early" => format!(
                "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Conn: {conn}\r\n\r\nearly"
            ),
            "close" => format!("HTTP/1.0 200 OK\r\nX-Conn: {conn}\r\n\r\nuntil the end"),
            "badchunk" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(),
            _ => "SSH-2.0-not-http\r\n\r\n".into(),
        };
        if tcp.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if matches!(name, "close" | "badchunk") {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_passes_through_on_one_connection() {
    let h = Harness::start_with(|c| {
        c.threads = 1;
        c.fast_path = true;
    })
    .await;
    let up = Scripted::start().await;
    h.running("sbfast", 1).await;
    let at = |name: &str| format!("/proxy/sbfast/{}/{name}", up.port);
    let mut c = Conn::open(h.addr()).await;

    let r = c.send("GET", &at("chunked"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    let first = r.header("x-conn").unwrap().to_owned();
    // The chunked body ended where its framing said: the upstream
    // connection went back to the pool and serves the next request.
    let r = c.send("GET", &at("length"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("x-conn"), Some(first.as_str()));
    let r = c.send("HEAD", &at("length"), &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some("2"));
    assert_eq!(r.header("x-conn"), Some(first.as_str()));
    let r = c.send("GET", &at("early"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "early"));
    assert_eq!(h.metric(FAST), 4.0);

    // A body delimited by the upstream's close: the client's connection
    // closes after it too.
    let r = c.send("GET", &at("close"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "until the end"));
    assert_eq!(r.header("connection"), Some("close"));
    tokio::time::timeout(std::time::Duration::from_secs(5), &mut c.closed)
        .await
        .expect("the client connection closes after a close-delimited body")
        .unwrap();
    assert_eq!(h.metric(FAST), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstream_responses_are_502_or_a_closed_connection() {
    let h = Harness::start_with(|c| c.fast_path = true).await;
    let up = Scripted::start().await;
    h.running("sbbroken", 1).await;
    let at = |name: &str| format!("/proxy/sbbroken/{}/{name}", up.port);

    let r = get(h.addr(), &at("garbage"), &[("accept", "application/json")]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // The head went out before the body broke: the client sees a cut body.
    let mut c = Conn::open(h.addr()).await;
    assert!(c.try_send("GET", &at("badchunk"), &[]).await.is_err());
    // The proxy keeps serving.
    assert_eq!(get(h.addr(), &at("length"), &[]).await.status, 200);
    assert_eq!(h.metric(FAST), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let h = Harness::start_with(|c| c.fast_path = true).await;
    let up = Scripted::start().await;
    h.running("sbpipe", 1).await;
    let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
    let req = |name: &str, extra: &str| {
        format!(
            "GET /proxy/sbpipe/{}/{name} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n",
            up.port
        )
    };
    let both = req("chunked", "") + &req("length", "Connection: close\r\n");
    tcp.write_all(both.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut all))
        .await
        .expect("the proxy closes after the second response")
        .unwrap();
    let text = String::from_utf8(all).unwrap();
    let chunked = text.find("hello\r\n").expect(&text);
    let length = text.find("\r\n\r\nok").expect(&text);
    assert!(chunked < length, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_plain_gets_and_heads_take_the_fast_path() {
    let h = Harness::start_with(|c| c.fast_path = true).await;
    let up = Upstream::http().await;
    h.running("sbwhich", 1).await;
    let target = format!("/proxy/sbwhich/{}/x?q=1", up.port());
    let mut c = Conn::open(h.addr()).await;
    let r = c.send("GET", &target, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/x?q=1");
    assert_eq!(
        r.json()["x-forwarded-prefix"],
        format!("/proxy/sbwhich/{}", up.port())
    );
    assert_eq!(h.metric(FAST), 1.0);
    // Pingora serves the rest, on the same connection.
    for method in ["POST", "DELETE", "OPTIONS"] {
        let r = c.send(method, &target, &[]).await;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.json()["method"], method);
    }
    let r = c
        .send("GET", &format!("/proxy/sbwhich/{}", up.port()), &[])
        .await;
    assert_eq!(r.status, 308);
    assert_eq!(h.metric(FAST), 1.0);
    let r = c.send("GET", &target, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(h.metric(FAST), 2.0);
    // Errors are Pingora's too (which closes the connection after them).
    let r = get(h.addr(), "/proxy/nosuch/8000/", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(h.metric(FAST), 2.0);
    let r = get(h.addr(), &target, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(h.metric(FAST), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fast_path_off_pingora_serves_everything() {
    let h = Harness::start_with(|c| c.fast_path = false).await;
    let up = Upstream::http().await;
    h.running("sboff", 1).await;
    let target = format!("/proxy/sboff/{}/x", up.port());
    let r = get(h.addr(), &target, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/x");
    assert_eq!(h.metric(FAST), 0.0);
}
