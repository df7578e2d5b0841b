//! Lean tokio: the least an HTTP/1.1 reverse proxy does per request, written
//! straight on tokio in nginx's worker model (and wrenn's): a current-thread
//! runtime per thread, each accepting on the shared listening socket and
//! keeping its own keep-alive pool of upstream connections. Per request it
//! parses the head with httparse, strips `/proxy/<id>/<port>`, sets
//! X-Forwarded-For/-Proto/-Host, forwards the head to a pooled upstream
//! connection, parses the response head, passes the Content-Length body
//! back, and appends an access-log line to a 64 KiB buffer (nginx's
//! `buffer=64k`, written to an unlinked file).
//!
//! It is a measuring stick, not a proxy: GETs only (no request bodies, and
//! no HEAD, whose Content-Length has no body), no routing, rewriting,
//! retries, timeouts, error pages, chunked responses or upgrades; a request
//! it cannot pass closes the connection. It
//! answers what the `proxy` scenario's gap to nginx is made of: measured on
//! the same bed, it shows what tokio, Rust and this kernel cost for the same
//! work, so the rest of wrenn's (and bare Pingora's) time is their own
//! per-request path.
//!
//! It runs as a child process of `wrenn-bench` (the hidden subcommand
//! [`SUBCOMMAND`], see [`crate::reference`]).

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::{RefProxy, strip_prefix};

/// `wrenn-bench __lean <upstream> <listen> <threads>`.
pub const SUBCOMMAND: &str = "__lean";

/// Request heads larger than this are refused (nginx's default is 8 KiB per line).
const MAX_HEAD: usize = 64 * 1024;
/// Access-log bytes buffered per thread before a `write`.
const LOG_BUFFER: usize = 64 * 1024;

/// Starts the lean forwarder with `threads` threads in front of `upstream`.
pub async fn start(threads: usize, upstream: SocketAddr) -> anyhow::Result<RefProxy> {
    RefProxy::start("the lean tokio forwarder", SUBCOMMAND, threads, upstream).await
}

/// The child process: serves until killed (SIGINT ends it).
pub fn serve(args: &[String]) -> anyhow::Result<()> {
    let [upstream, listen, threads] = args else {
        bail!("usage: wrenn-bench {SUBCOMMAND} <upstream> <listen> <threads>");
    };
    let upstream: SocketAddr = upstream.parse().context("upstream address")?;
    let listen: SocketAddr = listen.parse().context("listen address")?;
    let threads: usize = threads.parse().context("threads")?;
    crate::raise_fd_limit();
    let listener = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(listen)?;
            socket.listen(4096)?.into_std()
        })
        .with_context(|| format!("listening on {listen}"))?;
    let log_path =
        std::env::temp_dir().join(format!("wrenn-bench-lean-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).context("creating the access log")?;
    // Unlinked at once: writes are real, nothing is left behind when killed.
    std::fs::remove_file(&log_path)?;
    let workers = (0..threads.max(1))
        .map(|n| {
            let listener = listener.try_clone()?;
            let log = log.try_clone()?;
            std::thread::Builder::new()
                .name(format!("lean-{n}"))
                .spawn(move || worker(listener, log, upstream))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    Ok(())
}

/// What one thread shares between its connections.
struct Thread {
    upstream: SocketAddr,
    pool: RefCell<Vec<TcpStream>>,
    log: RefCell<(Vec<u8>, std::fs::File)>,
}

impl Thread {
    fn log(&self, line: std::fmt::Arguments<'_>) {
        let (buf, file) = &mut *self.log.borrow_mut();
        let _ = buf.write_fmt(line);
        if buf.len() >= LOG_BUFFER {
            let _ = file.write_all(buf);
            buf.clear();
        }
    }
}

fn worker(
    listener: std::net::TcpListener,
    log: std::fs::File,
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(listener)?;
        let thread = Rc::new(Thread {
            upstream,
            pool: RefCell::new(Vec::new()),
            log: RefCell::new((Vec::with_capacity(LOG_BUFFER * 2), log)),
        });
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(c) => c,
                // Out of descriptors and the like: keep serving the others.
                Err(_) => continue,
            };
            let _ = client.set_nodelay(true);
            let thread = thread.clone();
            tokio::task::spawn_local(async move {
                let _ = connection(&thread, client, peer).await;
            });
        }
    })
}

/// Serves one client connection's requests in turn.
async fn connection(t: &Thread, mut client: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(4096);
    let mut head = Vec::with_capacity(1024);
    let mut resp = vec![0u8; 64 * 1024];
    loop {
        // The request head (bytes after it stay in `req`: a pipelined next request).
        let (head_len, close, status_line) = loop {
            if let Some(parsed) = request_head(&req, &mut head, peer)? {
                break parsed;
            }
            if req.len() >= MAX_HEAD {
                client
                    .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await?;
                return Ok(());
            }
            if client.read_buf(&mut req).await? == 0 {
                return Ok(());
            }
        };
        req.drain(..head_len);
        let (status, sent) = exchange(t, &head, &mut resp, &mut client).await?;
        t.log(format_args!(
            "{} {} \"{}\" {status} {sent}\n",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            peer.ip(),
            status_line
        ));
        if close {
            return Ok(());
        }
    }
}

/// Parses a complete request head in `buf` into the upstream head `out`:
/// `(head length, client asked to close, "METHOD target")`, or `None` while
/// incomplete. Requests with a body are refused (this forwarder has no body path).
fn request_head(
    buf: &[u8],
    out: &mut Vec<u8>,
    peer: SocketAddr,
) -> std::io::Result<Option<(usize, bool, String)>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut headers);
    let len = match r.parse(buf).map_err(|e| invalid(&e.to_string()))? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let (method, target) = (r.method.unwrap_or("GET"), r.path.unwrap_or("/"));
    let upstream_target = strip_prefix(target).unwrap_or(target);
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(upstream_target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: &[u8] = b"";
    let mut close = r.version == Some(0);
    for h in r.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return Err(invalid("request bodies are not forwarded"));
        }
        if name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            host = h.value;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(
        out,
        "X-Forwarded-For: {}\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ",
        peer.ip()
    );
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n\r\n");
    Ok(Some((len, close, format!("{method} {target}"))))
}

/// Sends `head` upstream on a pooled connection (a fresh one if the pooled
/// one turns out closed) and passes the response to `client`: (status, bytes sent).
async fn exchange(
    t: &Thread,
    head: &[u8],
    resp: &mut [u8],
    client: &mut TcpStream,
) -> std::io::Result<(u16, usize)> {
    loop {
        let pooled = t.pool.borrow_mut().pop();
        let reused = pooled.is_some();
        let mut up = match pooled {
            Some(up) => up,
            None => {
                let up = TcpStream::connect(t.upstream).await?;
                up.set_nodelay(true)?;
                up
            }
        };
        match forward(&mut up, head, resp, client).await? {
            Some(done) => {
                t.pool.borrow_mut().push(up);
                return Ok(done);
            }
            // The upstream closed a pooled connection before answering: try a new one.
            None if reused => continue,
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the upstream closed without answering",
                ));
            }
        }
    }
}

/// One request/response on `up`; `None` when it closed before any response byte.
async fn forward(
    up: &mut TcpStream,
    head: &[u8],
    resp: &mut [u8],
    client: &mut TcpStream,
) -> std::io::Result<Option<(u16, usize)>> {
    if up.write_all(head).await.is_err() {
        return Ok(None);
    }
    let mut got = 0;
    let (status, total) = loop {
        if got == resp.len() {
            return Err(std::io::Error::other("response head too large"));
        }
        let n = up.read(&mut resp[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = r
            .parse(&resp[..got])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            let body = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or_else(|| std::io::Error::other("only Content-Length responses are passed"))?;
            break (r.code.unwrap_or(0), len + body);
        }
    };
    let first = got.min(total);
    client.write_all(&resp[..first]).await?;
    let mut sent = first;
    while sent < total {
        let want = (total - sent).min(resp.len());
        let n = up.read(&mut resp[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        client.write_all(&resp[..n]).await?;
        sent += n;
    }
    Ok(Some((status, sent)))
}

#[cfg(test)]
mod tests {
    use super::request_head;

    fn peer() -> std::net::SocketAddr {
        "10.0.0.7:4321".parse().unwrap()
    }

    #[test]
    fn the_upstream_head_drops_the_prefix_and_sets_forwarded_headers() {
        let req = b"GET /proxy/abc/8080/1k?x=1 HTTP/1.1\r\nHost: h:1\r\nX-Forwarded-For: spoofed\r\nAccept: */*\r\n\r\nGET /next";
        let mut out = Vec::new();
        let (len, close, line) = request_head(req, &mut out, peer()).unwrap().unwrap();
        assert_eq!(&req[len..], b"GET /next");
        assert!(!close);
        assert_eq!(line, "GET /proxy/abc/8080/1k?x=1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /1k?x=1 HTTP/1.1\r\nHost: h:1\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h:1\r\n\r\n"
        );
    }

    #[test]
    fn partial_heads_wait_and_bodies_and_close_are_seen() {
        let mut out = Vec::new();
        assert!(
            request_head(b"GET / HTTP/1.1\r\nHost: h", &mut out, peer())
                .unwrap()
                .is_none()
        );
        let (_, close, _) = request_head(
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            &mut out,
            peer(),
        )
        .unwrap()
        .unwrap();
        assert!(close);
        assert!(
            request_head(
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                &mut out,
                peer()
            )
            .is_err()
        );
    }
}
