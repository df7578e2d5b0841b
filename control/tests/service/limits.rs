//! The listener's timeouts: HTTP/1 header read and idle kept apart, HTTP/2
//! streams never cut by either. Small limits keep the tests short; the
//! defaults (10 s, 620 s) are the same code.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_control::ServerLimits;
use wrenn_proto::wrenn::v1::{CreateSandboxRequest, PtyRequest, PtyStart, pty_request};

use crate::common::{FakeAgent, TestControl};

async fn with_limits(agent: &FakeAgent, header: Duration, idle: Duration) -> TestControl {
    TestControl::start_with(&agent.url(), move |mut o| {
        o.limits = ServerLimits {
            header_read_timeout: header,
            idle_timeout: idle,
            ..ServerLimits::default()
        };
        o
    })
    .await
}

/// Reads until the peer closes; returns what was read.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .expect("server closed the connection in time")
        .ok();
    out
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "connection closed mid-response: {buf:?}"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8(body).unwrap()
}

const REQUEST: &[u8] = b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn an_incomplete_header_is_cut_off() {
    let agent = FakeAgent::start().await;
    let header = Duration::from_millis(300);
    let t = with_limits(&agent, header, Duration::from_secs(600)).await;

    // Connected, nothing sent.
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(t.control.local_addr()).await.unwrap();
    assert!(
        read_to_close(&mut s, Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(
        start.elapsed() >= header,
        "closed after {:?}",
        start.elapsed()
    );

    // Half a header, then silence.
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(t.control.local_addr()).await.unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut s, Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(
        start.elapsed() >= header,
        "closed after {:?}",
        start.elapsed()
    );
    t.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_gets_the_idle_timeout_not_the_header_timeout() {
    let agent = FakeAgent::start().await;
    let header = Duration::from_millis(200);
    let idle = Duration::from_millis(1200);
    let t = with_limits(&agent, header, idle).await;
    let mut s = TcpStream::connect(t.control.local_addr()).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 401"));

    // Quiet for longer than the header timeout: still open, still serving.
    tokio::time::sleep(header * 3).await;
    s.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 401"));

    // Then quiet for the idle timeout: closed.
    let quiet = tokio::time::Instant::now();
    assert!(
        read_to_close(&mut s, Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(
        quiet.elapsed() >= idle,
        "closed after {:?}",
        quiet.elapsed()
    );
    t.stop().await;
}

#[tokio::test]
async fn a_quiet_http2_stream_outlives_both_timeouts() {
    let agent = FakeAgent::start().await;
    let header = Duration::from_millis(100);
    let idle = Duration::from_millis(200);
    let t = with_limits(&agent, header, idle).await;
    let mut c = t.client().await;
    let id = c
        .sandboxes
        .create(CreateSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .id;
    let (tx, rx) = mpsc::channel(4);
    let start = PtyStart {
        sandbox_id: id,
        start: Some(Default::default()),
    };
    tx.send(PtyRequest {
        event: Some(pty_request::Event::Start(start)),
    })
    .await
    .unwrap();
    let mut out = c
        .sandboxes
        .pty(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    out.message().await.unwrap().unwrap();

    // A terminal nobody types into.
    tokio::time::sleep((header + idle) * 3).await;
    tx.send(PtyRequest {
        event: Some(pty_request::Event::Input(b"still here".to_vec())),
    })
    .await
    .unwrap();
    let echo = out.message().await.expect("stream survived").expect("echo");
    use wrenn_proto::process::process_event::{Event, data_event::Output};
    match echo.event.and_then(|e| e.event) {
        Some(Event::Data(d)) => assert_eq!(d.output, Some(Output::Pty(b"still here".to_vec()))),
        other => panic!("expected the echo, got {other:?}"),
    }
    drop(tx);
    drop(out);
    t.stop().await;
}

#[tokio::test]
async fn shutdown_closes_streams_still_open_after_the_grace_period() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start_with(&agent.url(), |mut o| {
        o.limits.shutdown_grace = Duration::from_millis(300);
        o
    })
    .await;
    let mut c = t.client().await;
    let id = c
        .sandboxes
        .create(CreateSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .id;
    let (tx, rx) = mpsc::channel(4);
    let start = PtyStart {
        sandbox_id: id.clone(),
        start: Some(Default::default()),
    };
    tx.send(PtyRequest {
        event: Some(pty_request::Event::Start(start)),
    })
    .await
    .unwrap();
    let mut out = c
        .sandboxes
        .pty(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    out.message().await.unwrap().unwrap();

    // A session nobody ends: shutdown waits the grace period, then cuts it.
    let began = tokio::time::Instant::now();
    t.stop().await;
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "stopped after {:?}",
        began.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(10), out.message())
        .await
        .expect("stream ended");
    assert!(
        end.is_err() || end.unwrap().is_none(),
        "the open stream was closed"
    );
    crate::common::eventually(
        Duration::from_secs(10),
        "the host's PTY session to be cancelled",
        || {
            let closed = agent.state.calls().contains(&format!("pty closed {id}"));
            async move { closed }
        },
    )
    .await;
    drop(tx);
}
