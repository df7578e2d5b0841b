//! Apps for the fast-path tests, on listeners made inside a namespace: an HTTP
//! server answering JSON `{peer, target}` (the address it was reached from,
//! which tells how the proxy dialled it) and a WebSocket echo server.
//! Dropping an app closes its listener and every connection, like a process
//! that exits.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub struct App {
    port: u16,
    accepted: Arc<AtomicUsize>,
    /// The accept loop; it owns every connection task (aborted with it).
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl App {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// HTTP/1.1; `close` answers every request with `Connection: close`.
    pub fn serve(listener: TcpListener, close: bool) -> App {
        Self::run(listener, move |tcp, peer| async move {
            let svc = service_fn(move |req| answer(req, peer.clone(), close));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(!close)
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        })
    }

    pub fn websocket(listener: TcpListener) -> App {
        Self::run(listener, |tcp, _| async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close()
                    || ((msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err())
                {
                    return;
                }
            }
        })
    }

    fn run<F, Fut>(listener: TcpListener, handle: F) -> App
    where
        F: Fn(tokio::net::TcpStream, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                conns.spawn(handle(tcp, peer.ip().to_string()));
                while conns.try_join_next().is_some() {}
            }
        });
        App {
            port,
            accepted,
            _task: AbortOnDrop(task.abort_handle()),
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    peer: String,
    close: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = serde_json::json!({ "peer": peer, "target": req.uri().to_string() });
    let mut resp = Response::builder().header("content-type", "application/json");
    if close {
        resp = resp.header("connection", "close");
    }
    Ok(resp.body(Full::new(Bytes::from(body.to_string()))).unwrap())
}
