//! The HTTP/1.1 side: keep-alive, pipelining, fixed responses, upgrades.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws;

/// Largest `/bytes/<n>` body.
const MAX_BYTES: usize = 16 << 20;
/// Largest request head kept in the buffer before the request is refused.
const MAX_HEAD: usize = 64 << 10;

/// The fixed responses, head and body in one buffer each.
pub struct Responses {
    k1: Vec<u8>,
    k64: Vec<u8>,
    health: Vec<u8>,
    not_found: Vec<u8>,
    bad: Vec<u8>,
}

impl Responses {
    pub fn new() -> Self {
        Responses {
            k1: response("200 OK", &body(1024)),
            k64: response("200 OK", &body(64 << 10)),
            health: response("200 OK", b"ok"),
            not_found: response("404 Not Found", b"not found"),
            bad: response("400 Bad Request", b"bad request"),
        }
    }
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

fn response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// One of the responses built at start.
#[derive(Clone, Copy)]
enum Fixed {
    K1,
    K64,
    Health,
    NotFound,
}

impl Responses {
    fn get(&self, f: Fixed) -> &[u8] {
        match f {
            Fixed::K1 => &self.k1,
            Fixed::K64 => &self.k64,
            Fixed::Health => &self.health,
            Fixed::NotFound => &self.not_found,
        }
    }
}

/// What to do with one parsed request.
enum Action {
    Fixed(Fixed),
    Owned(Vec<u8>),
    Upgrade(ws::Mode, String),
}

/// Serves one connection until the client closes it.
pub async fn serve(mut tcp: TcpStream, responses: Arc<Responses>) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Every complete request buffered so far (pipelining), in order.
        let mut start = 0;
        let mut close = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let n = match req.parse(&buf[start..]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    tcp.write_all(&responses.bad).await?;
                    return Ok(());
                }
            };
            let head = Head::of(&req);
            if head.content_length > 0 {
                // A request body: wait for all of it, then skip it.
                if buf.len() - start - n < head.content_length {
                    break;
                }
            }
            start += n + head.content_length;
            close |= head.close;
            match route(&req, &head) {
                Action::Fixed(f) => tcp.write_all(responses.get(f)).await?,
                Action::Owned(r) => tcp.write_all(&r).await?,
                Action::Upgrade(mode, key) => {
                    let accept = ws::accept_key(key.as_bytes());
                    let head = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    );
                    tcp.write_all(head.as_bytes()).await?;
                    buf.drain(..start);
                    return ws::serve(tcp, buf, mode).await;
                }
            }
            if close {
                break;
            }
        }
        buf.drain(..start);
        if close {
            let _ = tcp.shutdown().await;
            return Ok(());
        }
        if buf.len() > MAX_HEAD {
            tcp.write_all(&responses.bad).await?;
            return Ok(());
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// The headers this server looks at.
struct Head<'a> {
    content_length: usize,
    close: bool,
    websocket: bool,
    key: Option<&'a [u8]>,
}

impl<'a> Head<'a> {
    fn of(req: &httparse::Request<'_, 'a>) -> Self {
        let mut h = Head {
            content_length: 0,
            close: req.version == Some(0),
            websocket: false,
            key: None,
        };
        for header in req.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                h.content_length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") {
                let v = header.value.to_ascii_lowercase();
                if v.windows(5).any(|w| w == b"close") {
                    h.close = true;
                }
                if v.windows(10).any(|w| w == b"keep-alive") {
                    h.close = false;
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                h.websocket = header.value.eq_ignore_ascii_case(b"websocket");
            } else if name.eq_ignore_ascii_case("sec-websocket-key") {
                h.key = Some(header.value);
            }
        }
        h
    }
}

fn route(req: &httparse::Request<'_, '_>, head: &Head<'_>) -> Action {
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let (true, Some(key)) = (head.websocket, head.key) {
        let key = String::from_utf8_lossy(key).into_owned();
        match path {
            "/ws/echo" => return Action::Upgrade(ws::Mode::Echo, key),
            "/ws/stream" => {
                let param = |name: &str| {
                    query
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == name)
                        .and_then(|(_, v)| v.parse::<u64>().ok())
                };
                let size = param("size").unwrap_or(1024).min(MAX_BYTES as u64) as usize;
                let every = Duration::from_millis(param("every_ms").unwrap_or(100).max(1));
                return Action::Upgrade(ws::Mode::Stream { size, every }, key);
            }
            _ => {}
        }
    }
    match path {
        "/1k" => Action::Fixed(Fixed::K1),
        "/64k" => Action::Fixed(Fixed::K64),
        "/healthz" => Action::Fixed(Fixed::Health),
        _ => match path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n <= MAX_BYTES => Action::Owned(response("200 OK", &body(n))),
            _ => Action::Fixed(Fixed::NotFound),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(request: &[u8]) -> Vec<u8> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = serve(tcp, Arc::new(Responses::new())).await;
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(request).await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn pipelined_requests_get_answers_in_order_and_close_is_honoured() {
        let out = roundtrip(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /1k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        let text = String::from_utf8_lossy(&out);
        let statuses: Vec<&str> = text
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &text[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "200", "404"]);
        assert!(text.contains("Content-Length: 1024\r\n"));
        assert!(text.ends_with("not found"));
    }

    #[tokio::test]
    async fn sized_bodies() {
        let out = roundtrip(b"GET /bytes/5 HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(out.ends_with(b"\r\n\r\nabcde"));
        let out = roundtrip(b"GET /64k HTTP/1.0\r\n\r\n").await;
        assert!(out.ends_with(&body(64 << 10)));
    }
}
