//! Small network probes for the tests: gRPC health and a plain HTTP/1.1 GET
//! (no client library between the test and the proxy's bytes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Whether the gRPC server at `addr` reports SERVING for the whole server.
pub fn grpc_serving(addr: SocketAddr) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the health check");
    rt.block_on(async {
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
            return false;
        };
        let Ok(ch) = endpoint
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
        else {
            return false;
        };
        let req = HealthCheckRequest {
            service: String::new(),
        };
        matches!(HealthClient::new(ch).check(req).await,
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
    })
}

/// An HTTP response: status and body (headers dropped).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// `GET <path>` on `addr` with `Host: <host>`, `Connection: close`.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(Response { status, head, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// Polls `GET` until it answers `status`; panics with the last answer.
pub fn wait_http(
    addr: SocketAddr,
    host: &str,
    path: &str,
    status: u16,
    timeout: Duration,
) -> Response {
    let deadline = Instant::now() + timeout;
    loop {
        let r = http_get(addr, host, path);
        match &r {
            Ok(resp) if resp.status == status => return resp.clone(),
            _ if Instant::now() > deadline => panic!(
                "GET http://{host}{path} via {addr} did not answer {status} within {timeout:?}: {r:?}"
            ),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
