//! The agent's listener: every call but health needs the agent key; a
//! connection that sends nothing is closed at the header timeout and one
//! with no call in progress at the idle timeout, on HTTP/1.1 and HTTP/2.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wrenn_proto::wrenn::v1::{self as pb, host_agent_client::HostAgentClient};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the peer closes; the time that took, or `None` if it kept
/// the connection open for `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => return Some(start.elapsed()),
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn every_call_but_health_needs_the_agent_key() {
    let mut h = Harness::start().await;
    let addr = h.agent.as_ref().unwrap().local_addr();
    let key = agent_key(&h.config);
    assert_eq!(key.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.config.key_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is the owner's alone");

    let bare = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = HostAgentClient::new(bare.clone())
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    for wrong in [
        "not-the-key".to_owned(),
        key[..63].to_owned(),
        format!("{key}x"),
    ] {
        let mut c = connect(addr, &wrong).await;
        let err = c
            .create_sandbox(pb::CreateSandboxRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{wrong}: {err:?}");
    }
    assert_eq!(h.runtime.count(), 0, "nothing was created");
    // Health answers anyone: it says nothing but "serving".
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let health = HealthClient::new(bare)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1);
    // With the key, calls work.
    h.client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap();
    h.shutdown().await;
}

async fn quick_timeouts() -> (Harness, SocketAddr) {
    let h = Harness::start_with(|c| {
        c.header_read_timeout_ms = 600;
        c.idle_timeout_secs = 2;
    })
    .await;
    let addr = h.agent.as_ref().unwrap().local_addr();
    (h, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn silent_connections_are_closed_at_the_header_timeout() {
    let (mut h, addr) = quick_timeouts().await;
    // Nothing at all (either protocol).
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = closed_within(&mut s, Duration::from_secs(5)).await;
    let t = t.expect("a silent connection stays open");
    assert!(t >= Duration::from_millis(400), "closed too early: {t:?}");
    // HTTP/1.1: half a request head.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let t = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(t.is_some(), "a half head stays open");
    // HTTP/2: the preface and settings, then no request.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(SETTINGS).await.unwrap();
    let t = closed_within(&mut s, Duration::from_secs(5)).await;
    let t = t.expect("an HTTP/2 connection without a request stays open");
    assert!(t >= Duration::from_millis(400), "closed too early: {t:?}");
    h.shutdown().await;
}

/// A TCP relay to the agent that reports when the connection ends.
async fn relay(agent: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Receiver<Instant>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = l.accept().await.unwrap();
        let mut upstream = TcpStream::connect(agent).await.unwrap();
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        // The agent closes (GOAWAY, then FIN): whichever direction ends
        // first marks it (the client closes its side on the GOAWAY).
        let up = tokio::io::copy(&mut cr, &mut uw);
        let down = tokio::io::copy(&mut ur, &mut cw);
        tokio::select! { _ = up => {}, _ = down => {} }
        let _ = tx.send(Instant::now());
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn connections_with_no_call_in_progress_are_closed_at_the_idle_timeout() {
    let (mut h, addr) = quick_timeouts().await;
    let key = agent_key(&h.config);
    // HTTP/2: a call, then quiet (the agent's PINGs do not count).
    let (via, closed) = relay(addr).await;
    let mut c = connect(via, &key).await;
    c.list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap();
    let done = Instant::now();
    let at = tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("an idle HTTP/2 connection stays open")
        .unwrap();
    let idle = at - done;
    assert!(
        idle >= Duration::from_millis(1800) && idle < Duration::from_secs(6),
        "closed after {idle:?} (idle timeout 2 s)"
    );
    // HTTP/1.1: a complete request and its answer, then quiet.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert!(first.starts_with(b"HTTP/1.1 "), "{first:?}");
    let t = closed_within(&mut s, Duration::from_secs(8)).await;
    let t = t.expect("an idle HTTP/1.1 connection stays open");
    assert!(t >= Duration::from_millis(1500), "closed after {t:?}");

    // A stream in progress keeps its connection past the idle timeout.
    let (via, mut closed) = relay(addr).await;
    let mut c = connect(via, &key).await;
    let mut events = c
        .watch_sandboxes(pb::WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    events.message().await.unwrap().expect("the snapshot's end");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        closed.try_recv().is_err(),
        "a watched connection was closed as idle"
    );
    let mut fresh = connect(addr, &key).await;
    let sb = fresh
        .create_sandbox(pb::CreateSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.sandbox.unwrap().id, sb.id);
    drop(events);
    h.shutdown().await;
}
