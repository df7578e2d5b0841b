//! A real HTTP/1.1 client (hyper) for talking to the proxy.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive client connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    proxy: SocketAddr,
    pub closed: tokio::sync::oneshot::Receiver<()>,
}

impl Conn {
    pub async fn open(proxy: SocketAddr) -> Conn {
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let (tx, closed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = conn.await;
            let _ = tx.send(());
        });
        Conn {
            sender,
            proxy,
            closed,
        }
    }

    /// Sends `method target` with `headers`; `Host` defaults to `localhost:<proxy port>`.
    pub async fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        self.try_send(method, target, headers).await.unwrap()
    }

    pub async fn try_send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Resp, hyper::Error> {
        let mut req = http::Request::builder().method(method).uri(target);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", format!("localhost:{}", self.proxy.port()));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Empty::new()).unwrap())
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

/// One request on a fresh connection.
pub async fn get(proxy: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Resp {
    Conn::open(proxy).await.send("GET", target, headers).await
}
