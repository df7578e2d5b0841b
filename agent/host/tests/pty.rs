//! PTY sessions through the agent: start, input echo, resize, Ctrl-C,
//! attach, signals, exit.

mod common;

use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use wrenn_proto::process::{
    self as pp,
    process_event::{EndEvent, Event, data_event::Output},
};
use wrenn_proto::wrenn::v1::{self as pb, pty_request};

const T: Duration = Duration::from_secs(15);

struct Session {
    tx: mpsc::Sender<pb::PtyRequest>,
    rx: Streaming<pb::PtyResponse>,
    seen: Vec<u8>,
}

impl Session {
    async fn open(c: &mut Client, first: pty_request::Event) -> Result<Session, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::PtyRequest { event: Some(first) })
            .await
            .unwrap();
        let rx = c.pty(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Session {
            tx,
            rx,
            seen: Vec::new(),
        })
    }

    async fn send(&self, ev: pty_request::Event) {
        self.tx
            .send(pb::PtyRequest { event: Some(ev) })
            .await
            .unwrap();
    }

    async fn input(&self, s: &str) {
        self.send(pty_request::Event::Input(s.as_bytes().to_vec()))
            .await;
    }

    /// Next event that is not a keepalive.
    async fn event(&mut self) -> Event {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only keepalives for {T:?}; seen: {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            let msg = next(&mut self.rx, T)
                .await
                .expect("stream open")
                .expect("no error");
            match msg.event.and_then(|e| e.event) {
                Some(Event::Keepalive(_)) | None => continue,
                Some(Event::Data(d)) => {
                    if let Some(Output::Pty(b)) = &d.output {
                        self.seen.extend_from_slice(b);
                    }
                    return Event::Data(d);
                }
                Some(ev) => return ev,
            }
        }
    }

    /// Reads terminal output until it contains `needle`.
    async fn until(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + T;
        while !String::from_utf8_lossy(&self.seen).contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} within {T:?}; seen: {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            if let Event::End(e) = self.event().await {
                panic!(
                    "process ended ({e:?}) before {needle:?}; seen: {:?}",
                    String::from_utf8_lossy(&self.seen)
                );
            }
        }
        self.seen.clear();
    }

    async fn end(&mut self) -> EndEvent {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no end event within {T:?}"
            );
            if let Event::End(e) = self.event().await {
                return e;
            }
        }
    }
}

fn pty_start(id: &str, cmd: &str, args: &[&str], cols: u32, rows: u32) -> pty_request::Event {
    let mut s = start(cmd, args);
    s.pty = Some(pp::Pty {
        size: Some(pp::pty::Size { cols, rows }),
    });
    pty_request::Event::Start(pb::PtyStart {
        sandbox_id: id.into(),
        start: Some(s),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn terminal_session_echo_resize_ctrl_c_attach_and_exit() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut s = Session::open(&mut h.client, pty_start(&sb.id, "sh", &[], 80, 24))
        .await
        .unwrap();
    let pid = match s.event().await {
        Event::Start(st) => st.pid,
        other => panic!("expected start, got {other:?}"),
    };
    assert!(pid > 0);

    // Input reaches the shell; the quotes make the output differ from the echo.
    s.input("echo hel''lo\n").await;
    s.until("hello").await;

    // The terminal size is the one asked for, then the resized one.
    s.input("stty size\n").await;
    s.until("24 80").await;
    s.send(pty_request::Event::Resize(pp::pty::Size {
        cols: 132,
        rows: 50,
    }))
    .await;
    s.input("stty size\n").await;
    s.until("50 132").await;

    // Ctrl-C interrupts the foreground command, not the shell.
    s.input("sleep 600; echo slept\n").await;
    // ^C before the shell started `sleep` would hit the shell instead.
    let deadline = tokio::time::Instant::now() + T;
    while h.exec(&sb.id, "pgrep", &["-x", "sleep"]).await.exit_code != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sleep never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.input("\x03").await;
    s.input("echo after$((1+1))\n").await;
    s.until("after2").await;
    assert!(!String::from_utf8_lossy(&s.seen).contains("slept"));

    // A second client attaches by pid and drives the same terminal.
    let attach = pty_request::Event::Attach(pb::PtyAttach {
        sandbox_id: sb.id.clone(),
        process: Some(pp::ProcessSelector {
            selector: Some(pp::process_selector::Selector::Pid(pid)),
        }),
    });
    let mut a = Session::open(&mut h.client, attach).await.unwrap();
    assert!(matches!(a.event().await, Event::Start(st) if st.pid == pid));
    a.input("echo attached$((2+3))\n").await;
    a.until("attached5").await;
    s.until("attached5").await;

    // The first client leaves; the process keeps running for the second.
    drop(s);
    a.input("echo still$((3+4))\n").await;
    a.until("still7").await;

    a.input("exit 5\n").await;
    let end = a.end().await;
    assert_eq!(end.exit_code, 5);
    assert!(end.exited);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn signal_messages_reach_the_process() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut s = Session::open(&mut h.client, pty_start(&sb.id, "sleep", &["600"], 80, 24))
        .await
        .unwrap();
    assert!(matches!(s.event().await, Event::Start(_)));
    s.send(pty_request::Event::Signal(pp::Signal::Sigterm as i32))
        .await;
    let end = s.end().await;
    assert!(!end.exited);
    assert_eq!(end.exit_code, 128 + 15);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn bad_sessions_are_refused_by_name() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    // No size.
    let mut st = start("sh", &[]);
    st.pty = Some(pp::Pty { size: None });
    let e = Session::open(
        &mut h.client,
        pty_request::Event::Start(pb::PtyStart {
            sandbox_id: sb.id.clone(),
            start: Some(st),
        }),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "start.start.pty.size: cols and rows must both be above 0"
    );
    // First message is input.
    let e = Session::open(&mut h.client, pty_request::Event::Input(b"x".to_vec()))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        e.message(),
        "event: the first message must be start or attach"
    );
    // Attach to nothing.
    let e = Session::open(
        &mut h.client,
        pty_request::Event::Attach(pb::PtyAttach {
            sandbox_id: sb.id.clone(),
            process: None,
        }),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(e.message(), "attach.process: a pid or a tag is required");
    // A second start inside a session ends it with a clear error.
    let mut s = Session::open(&mut h.client, pty_start(&sb.id, "sh", &[], 80, 24))
        .await
        .unwrap();
    assert!(matches!(s.event().await, Event::Start(_)));
    s.send(pty_start(&sb.id, "sh", &[], 80, 24)).await;
    let e = loop {
        match next(&mut s.rx, T)
            .await
            .expect("stream ends with the error")
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "event: start and attach are only allowed as the first message"
    );
    h.shutdown().await;
}
