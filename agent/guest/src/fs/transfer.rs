//! File contents: `Read` streams chunks of at most 64 KiB; `Write` receives them
//! into a temporary file next to the target and renames it into place only when
//! the client half-closes the stream — and, when `start.size` declares the
//! upload's size, only if exactly that many bytes arrived (a cancelled call can
//! reach a server as a clean end of stream, hyperium/hyper#3681).
//!
//! Both do their file I/O on the blocking pool, connected to the gRPC side by a
//! small bounded channel. An upload whose stream fails or whose handler is
//! dropped (client reset) closes that channel without a commit, and the
//! temporary file's guard removes it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt as _};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use wrenn_proto::filesystem::{EntryInfo, ReadResponse, WriteRequest, write_request};

use super::FsError;
use super::entry::entry_info;
use super::ops::create_dirs_owned;
use crate::paths::{self, is_root};
use crate::users::{DEFAULT_USER, UserDb};

/// What every upload's temporary file name contains (watches leave them out).
pub const UPLOAD_MARK: &str = ".wrenn-upload-";

/// Whether `name` is an upload's temporary file.
pub fn is_upload_temp(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') && name.contains(UPLOAD_MARK)
}

/// Largest `Read` chunk.
pub const CHUNK: usize = 64 * 1024;
/// Chunks queued between the file and the gRPC stream, each way.
const QUEUE: usize = 16;
/// Mode of files created by `Write` unless the request gives one.
pub const DEFAULT_MODE: u32 = 0o644;

/// Opens `path` and streams its contents from the blocking pool.
pub async fn read(path: PathBuf) -> Result<mpsc::Receiver<Result<ReadResponse, Status>>, Status> {
    let opened = path.clone();
    let file = tokio::task::spawn_blocking(move || open_for_read(&opened))
        .await
        .map_err(|e| Status::internal(format!("read task failed: {e}")))??;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || stream_file(file, &path, &tx));
    Ok(rx)
}

fn open_for_read(path: &Path) -> Result<File, FsError> {
    let file = File::open(path).map_err(FsError::io("read", path))?;
    let meta = file.metadata().map_err(FsError::io("read", path))?;
    if meta.is_dir() {
        return Err(FsError::IsDir {
            op: "read",
            path: path.into(),
        });
    }
    Ok(file)
}

fn stream_file(mut file: File, path: &Path, tx: &mpsc::Sender<Result<ReadResponse, Status>>) {
    loop {
        let mut data = vec![0u8; CHUNK];
        let n = match file.read(&mut data) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                let err = FsError::Io {
                    op: "read",
                    path: path.into(),
                    source,
                };
                let _ = tx.blocking_send(Err(err.into()));
                return;
            }
        };
        data.truncate(n);
        if tx.blocking_send(Ok(ReadResponse { data })).is_err() {
            return; // The client went away.
        }
    }
}

enum WriteOp {
    Data(Vec<u8>),
    Commit(oneshot::Sender<Result<EntryInfo, FsError>>),
}

/// Receives an upload; see the module docs.
pub async fn write(
    mut stream: impl Stream<Item = Result<WriteRequest, Status>> + Unpin,
    users: Arc<UserDb>,
) -> Result<EntryInfo, Status> {
    let start = match stream.next().await.transpose()?.and_then(|m| m.event) {
        Some(write_request::Event::Start(start)) => start,
        _ => return Err(FsError::NoStart.into()),
    };
    let path = paths::absolute("start.path", &start.path)?;
    if is_root(&path) {
        return Err(FsError::Root { op: "write" }.into());
    }
    let mode = start.mode.unwrap_or(DEFAULT_MODE);
    if mode > 0o7777 {
        return Err(FsError::BadMode { mode }.into());
    }
    let owner = users.user(
        start
            .owner
            .as_deref()
            .filter(|o| !o.is_empty())
            .unwrap_or(DEFAULT_USER),
    )?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let target = Target {
        path,
        mode,
        uid: owner.uid,
        gid: owner.gid,
    };
    let declared = start.size;
    let mut received: u64 = 0;
    let upload_path = target.path.clone();
    let mismatch = |how, received| FsError::SizeMismatch {
        path: upload_path.clone(),
        how,
        received,
        declared: declared.unwrap_or(0),
    };
    let writer = tokio::task::spawn_blocking(move || writer(target, rx, &users));
    loop {
        let op = match stream.next().await.transpose()? {
            Some(WriteRequest {
                event: Some(write_request::Event::Data(data)),
            }) => {
                received += data.len() as u64;
                if declared.is_some_and(|d| received > d) {
                    return Err(mismatch("ran long", received).into());
                }
                WriteOp::Data(data)
            }
            Some(WriteRequest {
                event: Some(write_request::Event::Start(_)),
            }) => {
                return Err(FsError::SecondStart.into());
            }
            Some(WriteRequest { event: None }) => continue,
            None => {
                if declared.is_some_and(|d| received != d) {
                    return Err(mismatch("ended", received).into());
                }
                let (done_tx, done_rx) = oneshot::channel();
                if tx.send(WriteOp::Commit(done_tx)).await.is_ok()
                    && let Ok(result) = done_rx.await
                {
                    return result.map_err(Status::from);
                }
                break;
            }
        };
        if tx.send(op).await.is_err() {
            break;
        }
    }
    // The writer stopped early: its error says why.
    drop(tx);
    match writer.await {
        Ok(Err(err)) => Err(err.into()),
        Ok(Ok(())) | Err(_) => Err(Status::internal("the upload writer stopped unexpectedly")),
    }
}

struct Target {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Runs on the blocking pool. Returns `Ok(())` once it committed (the result went
/// through the commit's channel) or the stream ended without one.
fn writer(target: Target, mut rx: mpsc::Receiver<WriteOp>, users: &UserDb) -> Result<(), FsError> {
    let path = &target.path;
    let dir = path.parent().unwrap_or(Path::new("/"));
    create_dirs_owned(dir, target.uid, target.gid)?;
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(FsError::IsDir {
            op: "write",
            path: path.clone(),
        });
    }
    let mut temp = TempFile::create(path, target.mode)?;
    while let Some(op) = rx.blocking_recv() {
        match op {
            WriteOp::Data(data) => temp
                .file
                .write_all(&data)
                .map_err(FsError::io("write", &temp.path))?,
            WriteOp::Commit(done) => {
                let result = temp
                    .persist(&target)
                    .and_then(|()| entry_info(path, users).map_err(FsError::io("stat", path)));
                let _ = done.send(result);
                return Ok(());
            }
        }
    }
    tracing::debug!(path = %path.display(), "upload interrupted; temporary file removed");
    Ok(())
}

/// A temporary upload file, removed on drop unless persisted.
struct TempFile {
    file: File,
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// `.<name>.wrenn-upload-<pid>-<n>` in the target's directory.
    fn create(target: &Path, mode: u32) -> Result<Self, FsError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = target.with_file_name(format!(".{name}{UPLOAD_MARK}{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(FsError::io("create temporary file", &path))?;
        Ok(Self {
            file,
            path,
            persisted: false,
        })
    }

    /// Mode (past the umask), owner, then the atomic rename onto the target.
    fn persist(&mut self, target: &Target) -> Result<(), FsError> {
        let temp = &self.path;
        self.file
            .set_permissions(fs::Permissions::from_mode(target.mode))
            .map_err(FsError::io("chmod", temp))?;
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(&self.file, Some(target.uid), Some(target.gid))
                .map_err(FsError::io("chown", temp))?;
        }
        fs::rename(temp, &target.path).map_err(FsError::io("rename into place", &target.path))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted
            && let Err(err) = fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %err, "removing temporary upload file");
        }
    }
}
