//! Interactive calls relayed to the host as they flow: order kept, errors
//! passed on, nothing buffered whole, interrupted uploads never committed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use wrenn_control::service::RELAY_CAPACITY;
use wrenn_proto::filesystem::write_request::StartEvent as FileStart;
use wrenn_proto::process::process_event::{Event, data_event::Output};
use wrenn_proto::process::{self, ProcessConfig, ProcessSelector, StartRequest, process_selector};
use wrenn_proto::wrenn::v1::*;

use crate::common::fake_agent::{BIG_CHUNKS, CHUNK, WriteOutcome};
use crate::common::{FakeAgent, TestControl, eventually};
use wrenn_control::client::Client;

async fn setup() -> (FakeAgent, TestControl, Client, String) {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;
    let id = c
        .sandboxes
        .create(CreateSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .id;
    (agent, t, c, id)
}

fn command(cmd: &str, args: &[&str]) -> Option<StartRequest> {
    Some(StartRequest {
        process: Some(ProcessConfig {
            cmd: cmd.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn exec_returns_output_and_exit_code() {
    let (_agent, t, mut c, id) = setup().await;
    let out = c
        .sandboxes
        .exec(ExecRequest {
            sandbox_id: id.clone(),
            start: command("echo", &["hi", "there"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"echo hi there\n"[..], &b"stderr\n"[..], 0)
    );
    let out = c
        .sandboxes
        .exec(ExecRequest {
            sandbox_id: id,
            start: command("exit", &["3"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.exit_code, out.status.as_str()), (3, "exit status 3"));
    t.stop().await;
}

#[tokio::test]
async fn exec_stream_arrives_in_order() {
    let (_agent, t, mut c, id) = setup().await;
    let n = 2 * RELAY_CAPACITY as u32 + 17;
    let mut s = c
        .sandboxes
        .exec_stream(ExecRequest {
            sandbox_id: id,
            start: command("seq", &[&n.to_string()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(Event::Start(ref e)) if e.pid == 42),
        "{first:?}"
    );
    for i in 0..n {
        let ev = s.message().await.unwrap().unwrap();
        match ev.event {
            Some(Event::Data(d)) => assert_eq!(
                d.output,
                Some(Output::Stdout(format!("line {i}\n").into_bytes()))
            ),
            other => panic!("line {i}: {other:?}"),
        }
    }
    let last = s.message().await.unwrap().unwrap();
    assert!(
        matches!(last.event, Some(Event::End(ref e)) if e.exit_code == 0 && e.exited),
        "{last:?}"
    );
    assert!(s.message().await.unwrap().is_none());
    t.stop().await;
}

fn pty_output(resp: PtyResponse) -> Vec<u8> {
    match resp.event.and_then(|e| e.event) {
        Some(Event::Data(d)) => match d.output {
            Some(Output::Pty(b)) => b,
            other => panic!("not pty output: {other:?}"),
        },
        other => panic!("not data: {other:?}"),
    }
}

#[tokio::test]
async fn pty_echoes_input_in_order_then_ends_on_a_signal() {
    let (agent, t, mut c, id) = setup().await;
    let (tx, rx) = mpsc::channel(8);
    let start = PtyStart {
        sandbox_id: id.clone(),
        start: Some(StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/sh".into(),
                ..Default::default()
            }),
            pty: Some(process::Pty {
                size: Some(process::pty::Size { cols: 80, rows: 24 }),
            }),
            ..Default::default()
        }),
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
    let started = out.message().await.unwrap().unwrap();
    assert!(matches!(started.event.and_then(|e| e.event), Some(Event::Start(s)) if s.pid == 7));

    // Keystrokes one at a time, each echoed before the next is sent.
    for i in 0..300u32 {
        let key = format!("k{i}");
        tx.send(PtyRequest {
            event: Some(pty_request::Event::Input(key.clone().into_bytes())),
        })
        .await
        .unwrap();
        assert_eq!(
            pty_output(out.message().await.unwrap().unwrap()),
            key.into_bytes()
        );
    }
    // A burst, then a resize: all in order.
    for i in 0..100u32 {
        tx.send(PtyRequest {
            event: Some(pty_request::Event::Input(format!("b{i}").into_bytes())),
        })
        .await
        .unwrap();
    }
    tx.send(PtyRequest {
        event: Some(pty_request::Event::Resize(process::pty::Size {
            cols: 120,
            rows: 40,
        })),
    })
    .await
    .unwrap();
    for i in 0..100u32 {
        assert_eq!(
            pty_output(out.message().await.unwrap().unwrap()),
            format!("b{i}").into_bytes()
        );
    }
    assert_eq!(
        pty_output(out.message().await.unwrap().unwrap()),
        b"resize 120x40".to_vec()
    );

    tx.send(PtyRequest {
        event: Some(pty_request::Event::Signal(process::Signal::Sigint as i32)),
    })
    .await
    .unwrap();
    let end = out.message().await.unwrap().unwrap();
    assert!(
        matches!(end.event.and_then(|e| e.event), Some(Event::End(e)) if e.exit_code == 130 && !e.exited)
    );
    assert!(out.message().await.unwrap().is_none());
    eventually(
        Duration::from_secs(10),
        "the host's PTY session to end",
        || {
            let closed = agent.state.calls().contains(&format!("pty closed {id}"));
            async move { closed }
        },
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn a_caller_hanging_up_ends_the_pty_session_on_the_host() {
    let (agent, t, mut c, id) = setup().await;
    let (tx, rx) = mpsc::channel(8);
    let start = PtyStart {
        sandbox_id: id.clone(),
        start: command("/bin/sh", &[]),
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
    assert!(agent.state.calls().contains(&format!("pty {id}")));
    // Hang up without a signal: drop both directions and the connection.
    drop(out);
    drop(tx);
    drop(c);
    eventually(
        Duration::from_secs(10),
        "the host's PTY session to be cancelled",
        || {
            let closed = agent.state.calls().contains(&format!("pty closed {id}"));
            async move { closed }
        },
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn pty_needs_start_or_attach_first() {
    let (_agent, t, mut c, _id) = setup().await;
    let first = PtyRequest {
        event: Some(pty_request::Event::Input(b"x".to_vec())),
    };
    let err = c
        .sandboxes
        .pty(futures::stream::iter(vec![first]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "pty: the first message must be start or attach"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_large_file_streams_through_without_being_buffered_whole() {
    let (agent, t, mut c, id) = setup().await;
    let mut s = c
        .sandboxes
        .read_file(ReadFileRequest {
            sandbox_id: id,
            path: "/big".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    assert_eq!(first.data[..8], 0u64.to_be_bytes());

    // Stop reading and let the producer run until it stalls: it can only get
    // as far as the relay's channel, the fake's channel and the HTTP/2 windows
    // of the two hops allow, far short of the whole file.
    let mut last = u64::MAX;
    let mut stable_since = tokio::time::Instant::now();
    loop {
        let now = agent.state.produced.load(Ordering::SeqCst);
        if now != last {
            last = now;
            stable_since = tokio::time::Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(300) {
            break;
        }
        assert!(
            now < BIG_CHUNKS,
            "the whole file was produced while the reader read one chunk"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Channel (256) + fake (4) + two hops of HTTP/2 window (about 2 MiB each
    // way = 64 chunks of 32 KiB) + encoder slack.
    let bound = RELAY_CAPACITY as u64 + 4 + 2 * 64 + 64;
    eprintln!("producer stalled {last} chunks ahead of a reader that read 1 (bound {bound})");
    assert!(
        last <= bound,
        "{last} chunks produced ahead of a stalled reader (bound {bound})"
    );

    let mut n = 1u64;
    let mut bytes = first.data.len() as u64;
    while let Some(chunk) = s.message().await.unwrap() {
        assert_eq!(chunk.data[..8], n.to_be_bytes(), "chunk {n} out of order");
        assert!(chunk.data[8..].iter().all(|&b| b == (n % 251) as u8));
        n += 1;
        bytes += chunk.data.len() as u64;
    }
    assert_eq!((n, bytes), (BIG_CHUNKS, BIG_CHUNKS * CHUNK as u64));
    t.stop().await;
}

#[tokio::test]
async fn an_error_mid_stream_reaches_the_caller() {
    let (_agent, t, mut c, id) = setup().await;
    let mut s = c
        .sandboxes
        .read_file(ReadFileRequest {
            sandbox_id: id,
            path: "/broken".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for i in 0..3u64 {
        assert_eq!(
            s.message().await.unwrap().unwrap().data[..8],
            i.to_be_bytes()
        );
    }
    let err = s.message().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::DataLoss, "disk read failed")
    );
    t.stop().await;
}

fn write_start(id: &str, path: &str) -> WriteFileRequest {
    WriteFileRequest {
        event: Some(write_file_request::Event::Start(WriteFileStart {
            sandbox_id: id.to_owned(),
            file: Some(FileStart {
                path: path.into(),
                mode: None,
                owner: None,
                size: None,
            }),
        })),
    }
}

fn write_chunk(i: u64) -> WriteFileRequest {
    let mut d = vec![7u8; CHUNK];
    d[..8].copy_from_slice(&i.to_be_bytes());
    WriteFileRequest {
        event: Some(write_file_request::Event::Data(d)),
    }
}

#[tokio::test]
async fn an_upload_arrives_whole_and_in_order() {
    let (agent, t, mut c, id) = setup().await;
    const N: u64 = 2000;
    let stream = futures::stream::iter(
        std::iter::once(write_start(&id, "/data/in.bin")).chain((0..N).map(write_chunk)),
    );
    let res = c.sandboxes.write_file(stream).await.unwrap().into_inner();
    assert_eq!(res.entry.unwrap().size, (N * CHUNK as u64) as i64);
    assert_eq!(
        agent.state.writes.lock().clone(),
        vec![WriteOutcome::Committed {
            path: "/data/in.bin".into(),
            bytes: N * CHUNK as u64,
            in_order: true
        }]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_upload_is_aborted_on_the_host_not_committed() {
    let (agent, t, c, id) = setup().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(write_start(&id, "/data/partial.bin"))
        .await
        .unwrap();
    let mut sandboxes = c.sandboxes.clone();
    let upload = tokio::spawn(async move { sandboxes.write_file(ReceiverStream::new(rx)).await });
    for i in 0..10 {
        tx.send(write_chunk(i)).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "ten chunks to reach the host",
        || {
            let got = agent.state.write_progress.load(Ordering::SeqCst);
            async move { got >= 10 * CHUNK as u64 }
        },
    )
    .await;
    // The caller goes away mid-upload (its HTTP/2 stream is reset), while its
    // request stream is still open.
    upload.abort();
    let _ = upload.await;
    eventually(
        Duration::from_secs(10),
        "the host to see the upload end",
        || {
            let done = !agent.state.writes.lock().is_empty();
            async move { done }
        },
    )
    .await;
    let writes = agent.state.writes.lock().clone();
    // The agent saw its stream fail (INTERNAL), not end (which it would
    // commit), and not a CANCEL reset (which tonic reports as an end).
    assert!(
        matches!(
            writes.as_slice(),
            [WriteOutcome::Aborted { path, code: Code::Internal, .. }] if path == "/data/partial.bin"
        ),
        "{writes:?}"
    );
    drop(tx);
    t.stop().await;
}

#[tokio::test]
async fn write_needs_a_start_first() {
    let (_agent, t, mut c, _id) = setup().await;
    let err = c
        .sandboxes
        .write_file(futures::stream::iter(vec![write_chunk(0)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "write_file: the first message must be start");
    t.stop().await;
}

#[tokio::test]
async fn unary_calls_pass_through() {
    let (agent, t, mut c, id) = setup().await;
    let s = &mut c.sandboxes;
    let path = |p: &str| PathRequest {
        sandbox_id: id.clone(),
        path: p.into(),
    };
    assert_eq!(
        s.stat(path("/etc/hosts"))
            .await
            .unwrap()
            .into_inner()
            .entry
            .unwrap()
            .path,
        "/etc/hosts"
    );
    let list = s
        .list_dir(ListDirRequest {
            sandbox_id: id.clone(),
            path: "/tmp".into(),
            depth: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.entries
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        vec!["/tmp/a", "/tmp/b"]
    );
    s.make_dir(path("/tmp/new")).await.unwrap();
    s.r#move(MoveRequest {
        sandbox_id: id.clone(),
        source: "/tmp/a".into(),
        destination: "/tmp/c".into(),
    })
    .await
    .unwrap();
    s.remove(path("/tmp/c")).await.unwrap();
    let pid = s
        .start_background(StartBackgroundRequest {
            sandbox_id: id.clone(),
            start: command("sleep", &["9"]),
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert_eq!(pid, 100);
    let procs = s
        .list_processes(SandboxRef {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(procs.processes[0].tag.as_deref(), Some("srv"));
    let sel = ProcessSelector {
        selector: Some(process_selector::Selector::Tag("srv".into())),
    };
    s.kill_process(KillProcessRequest {
        sandbox_id: id.clone(),
        process: Some(sel.clone()),
        signal: 0,
    })
    .await
    .unwrap();
    s.send_input(SendInputRequest {
        sandbox_id: id.clone(),
        input: None,
    })
    .await
    .unwrap();
    let events: Vec<_> = s
        .connect_process(ConnectProcessRequest {
            sandbox_id: id.clone(),
            process: Some(sel),
        })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(events.len(), 2);
    let m = s
        .get_metrics(SandboxRef {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((m.sandbox_id.as_str(), m.pids), (id.as_str(), 3));
    let calls = agent.state.calls();
    for want in ["mkdir /tmp/new", "move /tmp/a /tmp/c", "remove /tmp/c"] {
        assert!(calls.iter().any(|c| c == want), "{want} not in {calls:?}");
    }
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("kill {id} Some(Tag(\"srv\"))"))),
        "{calls:?}"
    );
    assert!(calls.contains(&format!("input {id}")));
    // The host's own errors come back unchanged.
    let err = s
        .read_file(ReadFileRequest {
            sandbox_id: id.clone(),
            path: "/nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "/nope: no such file")
    );
    t.stop().await;
}
