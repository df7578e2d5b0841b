//! Files in the fake's sandboxes: `/big` and `/broken` to read, uploads
//! that remember how they ended, plausible answers for the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::state::{FakeState, WriteOutcome};
use crate::filesystem::{self as fs, EntryInfo};
use crate::wrenn::v1::*;

/// Size of each chunk of `/big`.
pub const CHUNK: usize = 32 * 1024;
/// Chunks in `/big` (about 94 MiB, never held in memory at once).
pub const BIG_CHUNKS: u64 = 3000;

pub(super) type Chunks = ReceiverStream<Result<fs::ReadResponse, Status>>;

/// An upload in progress; recorded as aborted unless marked done.
struct Upload {
    state: Arc<FakeState>,
    path: String,
    bytes: u64,
    code: tonic::Code,
    done: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let path = std::mem::take(&mut self.path);
            self.state.writes.lock().push(WriteOutcome::Aborted {
                path,
                bytes: self.bytes,
                code: self.code,
            });
        }
    }
}

fn entry(path: &str, size: i64) -> EntryInfo {
    EntryInfo {
        name: path.rsplit('/').next().unwrap_or_default().to_owned(),
        r#type: fs::FileType::File as i32,
        path: path.to_owned(),
        size,
        ..Default::default()
    }
}

/// `/big`: BIG_CHUNKS chunks made on demand, each starting with its index
/// (counted in `produced` once handed over); `/broken`: three chunks, then
/// DATA_LOSS; anything else: NOT_FOUND.
pub(super) fn read(state: &Arc<FakeState>, r: ReadFileRequest) -> Result<Chunks, Status> {
    state.exists(&r.sandbox_id)?;
    let (chunks, fail) = match r.path.as_str() {
        "/big" => (BIG_CHUNKS, false),
        "/broken" => (3, true),
        other => return Err(Status::not_found(format!("{other}: no such file"))),
    };
    let (tx, rx) = mpsc::channel(4);
    let state = state.clone();
    tokio::spawn(async move {
        for i in 0..chunks {
            let mut buf = vec![(i % 251) as u8; CHUNK];
            buf[..8].copy_from_slice(&i.to_be_bytes());
            if tx.send(Ok(fs::ReadResponse { data: buf })).await.is_err() {
                return;
            }
            state.produced.fetch_add(1, Ordering::SeqCst);
        }
        if fail {
            let _ = tx.send(Err(Status::data_loss("disk read failed"))).await;
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Counts bytes; data chunks start with their index (big-endian u64) so
/// order can be checked. Like the real agent: a clean end of the stream
/// commits at once (tonic reports a caller's CANCEL reset that way too, so
/// only the caller can prevent that), an error aborts.
pub(super) async fn write(
    state: &Arc<FakeState>,
    mut inbound: Streaming<WriteFileRequest>,
) -> Result<fs::WriteResponse, Status> {
    let path = match inbound.message().await? {
        Some(WriteFileRequest {
            event: Some(write_file_request::Event::Start(s)),
        }) => {
            state.exists(&s.sandbox_id)?;
            s.file.map(|f| f.path).unwrap_or_default()
        }
        _ => return Err(Status::invalid_argument("first message must be start")),
    };
    let mut upload = Upload {
        state: state.clone(),
        path,
        bytes: 0,
        code: tonic::Code::Cancelled,
        done: false,
    };
    let (mut next, mut in_order) = (0u64, true);
    loop {
        match inbound.message().await {
            Ok(Some(WriteFileRequest {
                event: Some(write_file_request::Event::Data(d)),
            })) => {
                if let Some(idx) = d.first_chunk::<8>() {
                    in_order &= u64::from_be_bytes(*idx) == next;
                    next += 1;
                }
                upload.bytes += d.len() as u64;
                state
                    .write_progress
                    .fetch_add(d.len() as u64, Ordering::SeqCst);
            }
            Ok(Some(_)) => return Err(Status::invalid_argument("start sent twice")),
            Ok(None) => break,
            Err(status) => {
                upload.code = status.code();
                return Err(status);
            }
        }
    }
    upload.done = true;
    let (path, bytes) = (upload.path.clone(), upload.bytes);
    state.writes.lock().push(WriteOutcome::Committed {
        path: path.clone(),
        bytes,
        in_order,
    });
    Ok(fs::WriteResponse {
        entry: Some(entry(&path, bytes as i64)),
    })
}

/// A 5-byte file at any path.
pub(super) fn stat(state: &FakeState, r: PathRequest) -> Result<fs::StatResponse, Status> {
    state.exists(&r.sandbox_id)?;
    Ok(fs::StatResponse {
        entry: Some(entry(&r.path, 5)),
    })
}

/// `a` (1 byte) and `b` (2 bytes) in any directory.
pub(super) fn list_dir(
    state: &FakeState,
    r: ListDirRequest,
) -> Result<fs::ListDirResponse, Status> {
    state.exists(&r.sandbox_id)?;
    let entries = vec![
        entry(&format!("{}/a", r.path), 1),
        entry(&format!("{}/b", r.path), 2),
    ];
    Ok(fs::ListDirResponse { entries })
}

/// Recorded as `mkdir <path>`.
pub(super) fn make_dir(state: &FakeState, r: PathRequest) -> Result<fs::MakeDirResponse, Status> {
    state.exists(&r.sandbox_id)?;
    state.record(format!("mkdir {}", r.path));
    Ok(fs::MakeDirResponse {
        entry: Some(entry(&r.path, 0)),
    })
}

/// Recorded as `move <source> <destination>`.
pub(super) fn rename(state: &FakeState, r: MoveRequest) -> Result<fs::MoveResponse, Status> {
    state.exists(&r.sandbox_id)?;
    state.record(format!("move {} {}", r.source, r.destination));
    Ok(fs::MoveResponse {
        entry: Some(entry(&r.destination, 0)),
    })
}

/// Recorded as `remove <path>`.
pub(super) fn remove(state: &FakeState, r: PathRequest) -> Result<fs::RemoveResponse, Status> {
    state.exists(&r.sandbox_id)?;
    state.record(format!("remove {}", r.path));
    Ok(fs::RemoveResponse {})
}
