//! Real upstream servers on loopback: an HTTP/1.1 echo server (hyper) that
//! reports what it received, a WebSocket echo server (tungstenite), and a
//! server that breaks every connection.
//!
//! The echo server answers JSON `{target, method, host, connection, conn_id,
//! x-forwarded-*}`; request headers `x-test-location`, `x-test-set-cookie`,
//! `x-test-refresh`, `x-test-content-location`, `x-test-status` and
//! `x-test-delay-ms` shape the response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running upstream; dropping it stops accepting and closes its listener.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The HTTP echo server on an ephemeral loopback port.
    pub async fn http() -> Upstream {
        Self::http_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn http_on(listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let conn_id = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let svc = service_fn(move |req| echo(req, conn_id));
                    let _ = hyper::server::conn::http1::Builder::new()
                        // Above the proxy's 256, so its limit is what tests see.
                        .max_headers(300)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            accepted,
            task,
        }
    }

    /// A WebSocket server echoing every message back.
    pub async fn websocket() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                        } else if msg.is_close() {
                            return;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            accepted,
            task,
        }
    }

    /// Reads each request's head, then resets the connection without answering.
    pub async fn broken() -> Upstream {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.set_zero_linger();
                drop(tcp);
            }
        });
        Upstream {
            addr,
            accepted,
            task,
        }
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn echo(req: Request<Incoming>, conn_id: usize) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(ms) = header(&req, "x-test-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = serde_json::json!({
        "target": req.uri().to_string(),
        "method": req.method().as_str(),
        "host": header(&req, "host"),
        "connection": header(&req, "connection"),
        "conn_id": conn_id,
        "x-forwarded-for": header(&req, "x-forwarded-for"),
        "x-forwarded-proto": header(&req, "x-forwarded-proto"),
        "x-forwarded-host": header(&req, "x-forwarded-host"),
        "x-forwarded-prefix": header(&req, "x-forwarded-prefix"),
    });
    let status = header(&req, "x-test-status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200u16);
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (from, to) in [
        ("x-test-location", "location"),
        ("x-test-content-location", "content-location"),
        ("x-test-refresh", "refresh"),
    ] {
        if let Some(v) = req.headers().get(from) {
            resp = resp.header(to, v.clone());
        }
    }
    for v in req.headers().get_all("x-test-set-cookie") {
        resp = resp.header("set-cookie", v.clone());
    }
    Ok(resp.body(Full::new(Bytes::from(body.to_string()))).unwrap())
}
