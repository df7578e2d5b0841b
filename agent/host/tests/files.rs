//! Files through the agent: large Read/Write streams, Stat, ListDir, MakeDir,
//! Move, Remove, and an interrupted upload.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use wrenn_proto::filesystem::{self as fs, FileType};
use wrenn_proto::wrenn::v1::{self as pb, write_file_request};

const T: Duration = Duration::from_secs(20);
const CHUNK: usize = 64 * 1024;

fn data(len: usize) -> Vec<u8> {
    // Not compressible, not repeating at chunk boundaries.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn upload(id: &str, path: &Path, body: &[u8]) -> Vec<pb::WriteFileRequest> {
    let start = pb::WriteFileRequest {
        event: Some(write_file_request::Event::Start(pb::WriteFileStart {
            sandbox_id: id.into(),
            file: Some(fs::write_request::StartEvent {
                path: path.display().to_string(),
                mode: None,
                owner: None,
                size: None,
            }),
        })),
    };
    std::iter::once(start)
        .chain(body.chunks(CHUNK).map(|c| pb::WriteFileRequest {
            event: Some(write_file_request::Event::Data(c.to_vec())),
        }))
        .collect()
}

/// An upload request declaring its size (`wrenn-upload-size`).
fn sized(
    msgs: Vec<pb::WriteFileRequest>,
    len: usize,
) -> tonic::Request<futures::stream::Iter<std::vec::IntoIter<pb::WriteFileRequest>>> {
    let mut r = tonic::Request::new(futures::stream::iter(msgs));
    r.metadata_mut()
        .insert("wrenn-upload-size", len.to_string().parse().unwrap());
    r
}

fn listing(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn path_req(id: &str, p: &Path) -> pb::PathRequest {
    pb::PathRequest {
        sandbox_id: id.into(),
        path: p.display().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn large_files_round_trip_and_every_file_call_works() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let work = h.dir.path().join("work");
    let big = work.join("sub/big.bin");
    let body = data(24 << 20);

    let w = h
        .client
        .write_file(sized(upload(&sb.id, &big, &body), body.len()))
        .await
        .unwrap()
        .into_inner();
    let entry = w.entry.unwrap();
    assert_eq!(entry.size, body.len() as i64);
    assert_eq!(entry.r#type, FileType::File as i32);
    assert_eq!(std::fs::read(&big).unwrap(), body, "the bytes landed");

    let mut s = h
        .client
        .read_file(pb::ReadFileRequest {
            sandbox_id: sb.id.clone(),
            path: big.display().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut back = Vec::with_capacity(body.len());
    while let Some(chunk) = next(&mut s, T).await {
        let chunk = chunk.unwrap();
        assert!(chunk.data.len() <= CHUNK);
        back.extend_from_slice(&chunk.data);
    }
    assert!(
        back == body,
        "read back {} bytes, wrote {}",
        back.len(),
        body.len()
    );

    let st = h
        .client
        .stat(path_req(&sb.id, &big))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(st.size, body.len() as i64);
    assert_eq!(st.name, "big.bin");
    assert_eq!(st.mode & 0o777, 0o644);

    let newdir = work.join("newdir");
    let made = h
        .client
        .make_dir(path_req(&sb.id, &newdir))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(made.r#type, FileType::Directory as i32);
    assert!(newdir.is_dir());

    let list = h
        .client
        .list_dir(pb::ListDirRequest {
            sandbox_id: sb.id.clone(),
            path: work.display().to_string(),
            depth: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = list.entries.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["big.bin", "newdir", "sub"]);

    let moved = newdir.join("moved.bin");
    h.client
        .r#move(pb::MoveRequest {
            sandbox_id: sb.id.clone(),
            source: big.display().to_string(),
            destination: moved.display().to_string(),
        })
        .await
        .unwrap();
    assert!(!big.exists() && moved.is_file());
    let e = h.client.stat(path_req(&sb.id, &big)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    h.client.remove(path_req(&sb.id, &newdir)).await.unwrap();
    assert!(!newdir.exists());

    let e = h
        .client
        .stat(path_req(&sb.id, Path::new("")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "path: empty path");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn an_interrupted_upload_leaves_nothing() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let dir = h.dir.path().join("up");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("partial.bin");
    let msgs = upload(&sb.id, &target, &data(CHUNK * 8));

    // The upload goes through a TCP relay the test can cut, like a caller
    // whose machine died mid-upload.
    let agent = h.agent.as_ref().unwrap().local_addr();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let cut = tokio::spawn(async move {
        let (mut a, _) = relay.accept().await.unwrap();
        let mut b = tokio::net::TcpStream::connect(agent).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    let mut client = connect(relay_addr, &agent_key(&h.config)).await;
    let (tx, rx) = mpsc::channel(4);
    let call = tokio::spawn(async move { client.write_file(ReceiverStream::new(rx)).await });
    for m in msgs.into_iter().take(4) {
        tx.send(m).await.unwrap();
    }
    // The guest writes into a temporary file next to the target.
    eventually(T, "temporary file appears", || {
        std::fs::read_dir(&dir).unwrap().count() > 0
    })
    .await;
    cut.abort();
    let res = call.await.unwrap();
    assert!(res.is_err(), "the cut upload failed: {res:?}");
    drop(tx);
    let listing = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let within = tokio::time::Instant::now() + T;
    while !listing().is_empty() {
        assert!(
            tokio::time::Instant::now() < within,
            "left behind: {:?}; guest log:\n{}",
            listing(),
            wrenn_vmm::Runtime::guest_output(&*h.runtime, &sb.id.parse().unwrap(), 8192)
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!target.exists());

    // A write whose first message is not start is refused by name.
    let e = h
        .client
        .write_file(futures::stream::iter([pb::WriteFileRequest {
            event: Some(write_file_request::Event::Data(vec![1])),
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "event: the first message must be start");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_cancelled_upload_of_declared_size_leaves_nothing() {
    // A caller that gives up drops its call: hyper sends RST_STREAM(CANCEL),
    // which the agent's server sees as a clean end of the stream. Only the
    // declared size tells it the upload is incomplete.
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let dir = h.dir.path().join("up");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("cancelled.bin");
    let msgs = upload(&sb.id, &target, &data(CHUNK * 8));
    let (tx, rx) = mpsc::channel(4);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "wrenn-upload-size",
        (CHUNK * 8).to_string().parse().unwrap(),
    );
    let mut client = h.client.clone();
    let call = tokio::spawn(async move { client.write_file(req).await });
    for m in msgs.into_iter().take(4) {
        tx.send(m).await.unwrap();
    }
    eventually(T, "temporary file appears", || !listing(&dir).is_empty()).await;
    call.abort();
    let _ = call.await;
    eventually(T, "temporary file removed", || listing(&dir).is_empty()).await;
    assert!(!target.exists());
    drop(tx);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn uploads_not_matching_their_declared_size_are_discarded() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let dir = h.dir.path().join("up");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("f.bin");
    let body = data(CHUNK * 3);

    let e = h
        .client
        .write_file(sized(upload(&sb.id, &target, &body), body.len() + 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert_eq!(
        e.message(),
        format!(
            "upload of {} ended after {} of the declared {} bytes; nothing was written",
            target.display(),
            body.len(),
            body.len() + 1
        )
    );
    let e = h
        .client
        .write_file(sized(upload(&sb.id, &target, &body), body.len() - 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("wrenn-upload-size: upload of "),
        "{}",
        e.message()
    );
    eventually(T, "nothing kept", || listing(&dir).is_empty()).await;

    let mut bad = tonic::Request::new(futures::stream::iter(upload(&sb.id, &target, &body)));
    bad.metadata_mut()
        .insert("wrenn-upload-size", "12k".parse().unwrap());
    let e = h.client.write_file(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "wrenn-upload-size: \"12k\" is not a size in bytes"
    );

    h.client
        .write_file(sized(upload(&sb.id, &target, &body), body.len()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), body);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn an_upload_open_at_shutdown_is_discarded_in_a_kept_sandbox() {
    let mut h = Harness::start_with(|c| c.keep_sandboxes_on_shutdown = true).await;
    let sb = h.create().await;
    let dir = h.dir.path().join("up");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("open.bin");
    let (tx, rx) = mpsc::channel(4);
    let mut client = h.client.clone();
    let call = tokio::spawn(async move { client.write_file(ReceiverStream::new(rx)).await });
    for m in upload(&sb.id, &target, &data(CHUNK * 4))
        .into_iter()
        .take(3)
    {
        tx.send(m).await.unwrap();
    }
    eventually(T, "temporary file appears", || !listing(&dir).is_empty()).await;
    h.shutdown().await;
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // The sandbox still runs; its guest dropped the upload.
    assert_eq!(h.runtime.count(), 1);
    eventually(T, "temporary file removed", || listing(&dir).is_empty()).await;
    drop(tx);
    wrenn_vmm::Runtime::destroy(&*h.runtime, &sb.id.parse().unwrap())
        .await
        .unwrap();
    let rt = h.runtime.clone();
    eventually(T, "sandbox process gone", || rt.live_pids().is_empty()).await;
}
