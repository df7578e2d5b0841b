//! Files: streaming contents both ways, names, listing, moves, removal, watches,
//! and what an interrupted upload leaves behind (nothing).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_proto::filesystem::watch_dir_response::Event as WatchEvent;
use wrenn_proto::filesystem::{
    EntryInfo, EventType, FileType, ListDirRequest, MakeDirRequest, MoveRequest, ReadRequest,
    RemoveRequest, StatRequest, WatchDirRequest, WriteRequest, write_request,
};

use crate::common::*;

const CHUNK: usize = 64 * 1024;

fn start_msg(path: &Path, mode: Option<u32>, owner: Option<&str>) -> WriteRequest {
    WriteRequest {
        event: Some(write_request::Event::Start(write_request::StartEvent {
            path: path.to_str().unwrap().into(),
            mode,
            owner: owner.map(Into::into),
            size: None,
        })),
    }
}

fn data_msg(data: Vec<u8>) -> WriteRequest {
    WriteRequest {
        event: Some(write_request::Event::Data(data)),
    }
}

async fn write_file(agent: &Agent, path: &Path, data: &[u8]) -> EntryInfo {
    let messages: Vec<WriteRequest> = std::iter::once(start_msg(path, None, None))
        .chain(data.chunks(CHUNK).map(|c| data_msg(c.to_vec())))
        .collect();
    agent
        .fs()
        .write(tokio_stream::iter(messages))
        .await
        .expect("Write")
        .into_inner()
        .entry
        .unwrap()
}

async fn read_file(agent: &Agent, path: &Path) -> Vec<u8> {
    let mut stream = agent
        .fs()
        .read(ReadRequest {
            path: path.to_str().unwrap().into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend(chunk.unwrap().data);
    }
    data
}

/// xorshift64: deterministic, incompressible enough, cheap.
fn fill(state: &mut u64, buf: &mut [u8]) {
    for word in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn hundred_megabytes_round_trip_with_checksum() {
    const SIZE: usize = 100 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let agent = Agent::start().await;
    let sent = Arc::new(Mutex::new(Sha256::new()));
    let hasher = sent.clone();
    let chunks = futures::stream::unfold(
        (0usize, 0x9e37_79b9_7f4a_7c15u64),
        move |(offset, mut state)| {
            let hasher = hasher.clone();
            async move {
                if offset >= SIZE {
                    return None;
                }
                let mut buf = vec![0u8; CHUNK.min(SIZE - offset)];
                fill(&mut state, &mut buf);
                hasher.lock().unwrap().update(&buf);
                Some((data_msg(buf), (offset + CHUNK, state)))
            }
        },
    );
    let first = start_msg(&path, None, None);
    let messages = futures::stream::once(async move { first }).chain(chunks);
    let entry = agent
        .fs()
        .write(messages)
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(entry.size, SIZE as i64);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE as u64);

    let mut stream = agent
        .fs()
        .read(ReadRequest {
            path: path.to_str().unwrap().into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = Sha256::new();
    let mut len = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap().data;
        assert!(chunk.len() <= CHUNK, "chunk of {} bytes", chunk.len());
        len += chunk.len();
        received.update(&chunk);
    }
    assert_eq!(len, SIZE);
    assert_eq!(received.finalize(), sent.lock().unwrap().clone().finalize());
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn names_with_spaces_and_non_ascii() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("with space").join("ünïcödé 文件 ✓.txt");
    let agent = Agent::start().await;
    let entry = write_file(&agent, &path, "contenu ✓\n".as_bytes()).await;
    assert_eq!(entry.name, "ünïcödé 文件 ✓.txt");
    assert_eq!(entry.path, path.to_str().unwrap());
    assert_eq!(entry.r#type, FileType::File as i32);
    assert_eq!(entry.mode, 0o644);
    assert_eq!(entry.permissions, "-rw-r--r--");
    assert_eq!(
        (entry.owner.as_str(), entry.group.as_str()),
        ("root", "root")
    );
    assert_eq!(read_file(&agent, &path).await, "contenu ✓\n".as_bytes());
    let stat = agent
        .fs()
        .stat(StatRequest {
            path: path.to_str().unwrap().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stat.entry.unwrap(), entry);
    let parent = path.parent().unwrap().to_str().unwrap().to_owned();
    let listed = agent
        .fs()
        .list_dir(ListDirRequest {
            path: parent,
            depth: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["ünïcödé 文件 ✓.txt"]
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn list_dir_depth_one_and_two() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::create_dir_all(base.join("a/b/c")).unwrap();
    std::fs::write(base.join("a/one.txt"), b"1").unwrap();
    std::fs::write(base.join("a/b/two.txt"), b"2").unwrap();
    std::fs::write(base.join("top.txt"), b"t").unwrap();
    let agent = Agent::start().await;
    let list = |depth| {
        let mut fs = agent.fs();
        let path = base.to_str().unwrap().to_owned();
        async move {
            let entries = fs
                .list_dir(ListDirRequest { path, depth })
                .await
                .unwrap()
                .into_inner()
                .entries;
            let prefix = format!("{}/", base.display());
            entries
                .iter()
                .map(|e| e.path.strip_prefix(&prefix).unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(1).await, ["a", "top.txt"]);
    assert_eq!(list(0).await, ["a", "top.txt"]);
    assert_eq!(list(2).await, ["a", "a/b", "a/one.txt", "top.txt"]);
    assert_eq!(
        list(3).await,
        ["a", "a/b", "a/b/c", "a/b/two.txt", "a/one.txt", "top.txt"]
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn make_dir_move_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let agent = Agent::start().await;
    let mut fs = agent.fs();
    let made = fs
        .make_dir(MakeDirRequest {
            path: s(&base.join("x/y")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.entry.unwrap().r#type, FileType::Directory as i32);
    let again = fs
        .make_dir(MakeDirRequest {
            path: s(&base.join("x/y")),
        })
        .await
        .unwrap_err();
    assert_code(&again, tonic::Code::AlreadyExists, "x/y");

    std::fs::write(base.join("x/y/f.txt"), b"data").unwrap();
    // Into a directory that does not exist yet.
    let moved = fs
        .r#move(MoveRequest {
            source: s(&base.join("x/y/f.txt")),
            destination: s(&base.join("z/g.txt")),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(moved.name, "g.txt");
    assert!(!base.join("x/y/f.txt").exists());
    assert_eq!(std::fs::read(base.join("z/g.txt")).unwrap(), b"data");
    fs.r#move(MoveRequest {
        source: s(&base.join("x")),
        destination: s(&base.join("w")),
    })
    .await
    .unwrap();
    assert!(base.join("w/y").is_dir() && !base.join("x").exists());

    fs.remove(RemoveRequest {
        path: s(&base.join("z/g.txt")),
    })
    .await
    .unwrap();
    assert!(!base.join("z/g.txt").exists());
    fs.remove(RemoveRequest {
        path: s(&base.join("w")),
    })
    .await
    .unwrap();
    assert!(!base.join("w").exists());
    let missing = fs
        .remove(RemoveRequest {
            path: s(&base.join("w")),
        })
        .await
        .unwrap_err();
    assert_code(&missing, tonic::Code::NotFound, &s(&base.join("w")));
    let missing = fs
        .stat(StatRequest {
            path: s(&base.join("nope")),
        })
        .await
        .unwrap_err();
    assert_code(&missing, tonic::Code::NotFound, "nope");
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn watch_dir_sees_create_write_remove() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    std::fs::create_dir(base.join("sub")).unwrap();
    let agent = Agent::start().await;
    let req = WatchDirRequest {
        path: base.to_str().unwrap().into(),
        recursive: true,
        ..Default::default()
    };
    let mut events = agent.fs().watch_dir(req).await.unwrap().into_inner();
    let first = events.next().await.unwrap().unwrap().event.unwrap();
    assert!(
        matches!(first, WatchEvent::Start(_)),
        "first event must be start: {first:?}"
    );

    std::fs::write(base.join("f.txt"), b"x").unwrap();
    std::fs::write(base.join("f.txt"), b"more").unwrap();
    std::fs::write(base.join("sub/g.txt"), b"in a subdirectory").unwrap();
    std::fs::remove_file(base.join("f.txt")).unwrap();

    let wanted = [
        ("f.txt", EventType::Create),
        ("f.txt", EventType::Write),
        ("sub/g.txt", EventType::Create),
        ("f.txt", EventType::Remove),
    ];
    let mut seen = Vec::new();
    while !wanted.iter().all(|w| seen.contains(&(w.0.to_owned(), w.1))) {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap();
        if let Some(WatchEvent::Filesystem(fs_event)) = event.event {
            seen.push((fs_event.name.clone(), fs_event.r#type()));
        }
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn write_into_a_missing_directory_creates_it_for_the_owner() {
    let user = TestUser::create("files");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/nested/dirs/file.txt");
    let agent = Agent::start().await;
    let messages = vec![
        start_msg(&path, Some(0o600), Some(&user.name)),
        data_msg(b"secret".to_vec()),
    ];
    let entry = agent
        .fs()
        .write(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(entry.owner, user.name);
    assert_eq!(entry.mode, 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    for created in ["new", "new/nested", "new/nested/dirs"] {
        let meta = std::fs::metadata(dir.path().join(created)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(
            meta.uid(),
            user.uid(),
            "{created} not owned by the file's owner"
        );
    }
    // An existing file is replaced whole.
    write_file(&agent, &path, b"replaced").await;
    assert_eq!(std::fs::read(&path).unwrap(), b"replaced");
}

/// Relays one TCP connection to `upstream`. Aborting the task closes both
/// sockets at once, as a crashed client or a lost network does.
async fn relay(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    (addr, task)
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_write_dropped_halfway_leaves_no_file_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.bin");
    let agent = Agent::start().await;
    let (relay_addr, relay) = relay(agent.addr).await;
    let mut fs = wrenn_proto::filesystem::filesystem_client::FilesystemClient::new(
        connect(relay_addr).await,
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let upload = tokio::spawn(async move { fs.write(ReceiverStream::new(rx)).await });
    tx.send(start_msg(&path, None, None)).await.unwrap();
    for _ in 0..8 {
        tx.send(data_msg(vec![7u8; CHUNK])).await.unwrap();
    }
    let entries = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    };
    // The upload is in progress: a temporary file exists, the target does not.
    eventually("the temporary file appears", || !entries().is_empty()).await;
    assert!(!path.exists(), "target created before the upload finished");
    // The client vanishes mid-upload.
    relay.abort();
    eventually("the temporary file is removed", || entries().is_empty()).await;
    assert!(!path.exists());
    drop(tx);
    assert!(
        upload.await.unwrap().is_err(),
        "an upload cut off halfway must not succeed"
    );
    agent.assert_serving().await;
}

/// `start.size`: an upload that ends short or runs long is discarded, even
/// though its stream ended cleanly; an exact one is committed.
#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_declared_size_must_match_or_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start().await;
    let upload = |name: &str, declared: u64, sent: usize| {
        let path = dir.path().join(name);
        let mut start = start_msg(&path, None, None);
        if let Some(write_request::Event::Start(s)) = &mut start.event {
            s.size = Some(declared);
        }
        let messages: Vec<WriteRequest> = std::iter::once(start)
            .chain(vec![9u8; sent].chunks(CHUNK).map(|c| data_msg(c.to_vec())))
            .collect();
        (path, messages)
    };

    let (short, msgs) = upload("short.bin", 3 * CHUNK as u64, 2 * CHUNK);
    let err = agent
        .fs()
        .write(tokio_stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("{} of {}", 2 * CHUNK, 3 * CHUNK)),
        "{err:?}"
    );
    assert!(err.message().contains("short.bin"), "{err:?}");
    assert!(!short.exists());

    let (long, msgs) = upload("long.bin", 10, CHUNK);
    let err = agent
        .fs()
        .write(tokio_stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(err.message().contains("ran long"), "{err:?}");
    assert!(!long.exists());

    let (exact, msgs) = upload("exact.bin", 2 * CHUNK as u64 + 5, 2 * CHUNK + 5);
    let entry = agent
        .fs()
        .write(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entry.entry.unwrap().size, 2 * CHUNK as i64 + 5);
    assert_eq!(std::fs::read(&exact).unwrap().len(), 2 * CHUNK + 5);

    // Nothing but the committed file: no temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("exact.bin")]);
    agent.assert_serving().await;
}
