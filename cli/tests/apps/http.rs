//! Just enough HTTP/1.1 to poll the proxy from the test: one GET per
//! connection (`Connection: close`), status code and body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `GET <path>` to `addr` with `Host: <host>`; `None` if the connection
/// failed or no status line came back within 10 s.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Some((status, body.unwrap_or_default()))
}

/// Splits `http://host:port/path` into the `Host` header value and the path.
pub fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

/// Polls `url` through the proxy at `proxy` every 250 ms until it answers
/// `want`; panics after `timeout` with the last answer and `context()`.
pub fn wait_for_status(
    proxy: SocketAddr,
    url: &str,
    want: u16,
    timeout: Duration,
    context: impl Fn() -> String,
) {
    let (host, path) = split_url(url);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = get(proxy, &host, &path);
        if last.as_ref().is_some_and(|(s, _)| *s == want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{url} did not answer {want} within {timeout:?}; last answer: {last:?}\n{}",
        context()
    );
}
