//! `filesystem.Filesystem`: stat, list, make, move and remove entries, watch a
//! directory, and stream file contents in (`Write`) and out (`Read`).
//!
//! Every path is checked by [`crate::paths::absolute`]; errors name the
//! operation and the path and map to gRPC codes (`NOT_FOUND`,
//! `PERMISSION_DENIED`, `ALREADY_EXISTS`, `FAILED_PRECONDITION` for wrong types,
//! `INVALID_ARGUMENT` for malformed requests). File system work runs on the
//! blocking pool, never on the async workers.

mod entry;
mod ops;
mod transfer;
mod watch;
mod watchers;

pub use transfer::{read as read_file, write as write_file};
pub use watchers::Watchers;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use wrenn_proto::filesystem::filesystem_server::Filesystem;
use wrenn_proto::filesystem::watch_dir_response::{Event as WatchEvent, KeepAlive};
use wrenn_proto::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, GetWatcherEventsRequest, GetWatcherEventsResponse,
    ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse, MoveRequest, MoveResponse,
    ReadRequest, ReadResponse, RemoveRequest, RemoveResponse, RemoveWatcherRequest,
    RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest, WatchDirResponse,
    WriteRequest, WriteResponse,
};

use crate::paths::{self, PathError};
use crate::stream::with_keepalive;
use crate::users::{User, UserDb, UserError};
use crate::wire::{chain, io_code};

/// What went wrong with a filesystem request.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} {}: not a directory", path.display())]
    NotDir { op: &'static str, path: PathBuf },
    #[error("{op} {}: is a directory", path.display())]
    IsDir { op: &'static str, path: PathBuf },
    #[error("{op} {}: already exists", path.display())]
    Exists { op: &'static str, path: PathBuf },
    #[error("refusing to {op} /")]
    Root { op: &'static str },
    #[error("move {} to {}: a directory or special file cannot be moved across file systems", from.display(), to.display())]
    CrossDevice { from: PathBuf, to: PathBuf },
    #[error("start.mode {mode:#o} is not a permission mode (at most 0o7777)")]
    BadMode { mode: u32 },
    #[error("the first Write message must be `start`")]
    NoStart,
    #[error("`start` may only be the first Write message")]
    SecondStart,
    #[error("upload of {} {how} after {received} of {declared} declared bytes; nothing was written", path.display())]
    SizeMismatch {
        path: PathBuf,
        how: &'static str,
        received: u64,
        declared: u64,
    },
}

impl FsError {
    /// `map_err` helper: an I/O failure of `op` on `path`.
    pub fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FsError {
        let path = path.to_owned();
        move |source| FsError::Io { op, path, source }
    }
}

impl From<FsError> for Status {
    fn from(err: FsError) -> Self {
        use FsError as E;
        match err {
            E::Path(e) => e.into(),
            E::User(e) => e.into(),
            E::Io { ref source, .. } => Status::new(io_code(source), chain(&err)),
            E::NotDir { .. } | E::IsDir { .. } | E::CrossDevice { .. } => {
                Status::failed_precondition(err.to_string())
            }
            E::Exists { .. } => Status::already_exists(err.to_string()),
            E::Root { .. } | E::BadMode { .. } | E::NoStart | E::SecondStart => {
                Status::invalid_argument(err.to_string())
            }
            E::SizeMismatch { .. } => Status::aborted(err.to_string()),
        }
    }
}

/// Serves `filesystem.Filesystem`.
#[derive(Debug, Clone)]
pub struct FilesystemService {
    users: Arc<UserDb>,
    keepalive: Duration,
    watchers: Arc<Watchers>,
}

impl FilesystemService {
    pub fn new(users: Arc<UserDb>, keepalive: Duration) -> Self {
        Self {
            users,
            keepalive,
            watchers: Arc::default(),
        }
    }

    pub fn users(&self) -> &Arc<UserDb> {
        &self.users
    }

    /// `MakeDir` with the new directories owned by `owner` (`make_dir`
    /// leaves them to the agent's user, root).
    pub async fn make_dir_owned(
        &self,
        request: MakeDirRequest,
        owner: Arc<User>,
    ) -> Result<MakeDirResponse, Status> {
        let path = paths::absolute("path", &request.path)?;
        let entry = self
            .blocking(move |users| ops::make_dir(&path, Some((owner.uid, owner.gid)), users))
            .await?;
        Ok(MakeDirResponse { entry: Some(entry) })
    }

    /// Runs `f` on the blocking pool with the user database.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&UserDb) -> Result<T, FsError> + Send + 'static,
    ) -> Result<T, Status> {
        let users = self.users.clone();
        tokio::task::spawn_blocking(move || f(&users))
            .await
            .map_err(|e| Status::new(Code::Internal, format!("filesystem task failed: {e}")))?
            .map_err(Status::from)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Filesystem for FilesystemService {
    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let path = paths::absolute("path", &request.get_ref().path)?;
        let entry = self.blocking(move |users| ops::stat(&path, users)).await?;
        Ok(Response::new(StatResponse { entry: Some(entry) }))
    }

    async fn make_dir(
        &self,
        request: Request<MakeDirRequest>,
    ) -> Result<Response<MakeDirResponse>, Status> {
        let path = paths::absolute("path", &request.get_ref().path)?;
        let entry = self
            .blocking(move |users| ops::make_dir(&path, None, users))
            .await?;
        Ok(Response::new(MakeDirResponse { entry: Some(entry) }))
    }

    async fn r#move(
        &self,
        request: Request<MoveRequest>,
    ) -> Result<Response<MoveResponse>, Status> {
        let from = paths::absolute("source", &request.get_ref().source)?;
        let to = paths::absolute("destination", &request.get_ref().destination)?;
        let entry = self
            .blocking(move |users| ops::rename(&from, &to, users))
            .await?;
        Ok(Response::new(MoveResponse { entry: Some(entry) }))
    }

    async fn list_dir(
        &self,
        request: Request<ListDirRequest>,
    ) -> Result<Response<ListDirResponse>, Status> {
        let path = paths::absolute("path", &request.get_ref().path)?;
        let depth = request.get_ref().depth;
        let entries = self
            .blocking(move |users| ops::list_dir(&path, depth, users))
            .await?;
        Ok(Response::new(ListDirResponse { entries }))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let path = paths::absolute("path", &request.get_ref().path)?;
        self.blocking(move |_| ops::remove(&path)).await?;
        Ok(Response::new(RemoveResponse {}))
    }

    type WatchDirStream = BoxStream<WatchDirResponse>;

    async fn watch_dir(
        &self,
        request: Request<WatchDirRequest>,
    ) -> Result<Response<Self::WatchDirStream>, Status> {
        let path = paths::absolute("path", &request.get_ref().path)?;
        let req = request.get_ref();
        let entries = req.include_entry.then(|| self.users.clone());
        let events = watch::watch(path, req.recursive, entries)?;
        let keepalive = || WatchDirResponse {
            event: Some(WatchEvent::Keepalive(KeepAlive {})),
        };
        Ok(Response::new(Box::pin(with_keepalive(
            events,
            self.keepalive,
            |_| false,
            |e| e,
            keepalive,
        ))))
    }

    type ReadStream = BoxStream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let path = paths::absolute("path", &request.get_ref().path)?;
        let chunks = transfer::read(path).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks))))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let entry = transfer::write(request.into_inner(), self.users.clone()).await?;
        Ok(Response::new(WriteResponse { entry: Some(entry) }))
    }

    async fn create_watcher(
        &self,
        request: Request<CreateWatcherRequest>,
    ) -> Result<Response<CreateWatcherResponse>, Status> {
        let req = request.into_inner();
        let path = paths::absolute("path", &req.path)?;
        let entries = req.include_entry.then(|| self.users.clone());
        let watcher_id = self.watchers.create(path, req.recursive, entries)?;
        Ok(Response::new(CreateWatcherResponse { watcher_id }))
    }

    async fn get_watcher_events(
        &self,
        request: Request<GetWatcherEventsRequest>,
    ) -> Result<Response<GetWatcherEventsResponse>, Status> {
        let events = self.watchers.take(&request.get_ref().watcher_id)?;
        Ok(Response::new(GetWatcherEventsResponse { events }))
    }

    async fn remove_watcher(
        &self,
        request: Request<RemoveWatcherRequest>,
    ) -> Result<Response<RemoveWatcherResponse>, Status> {
        self.watchers.remove(&request.get_ref().watcher_id)?;
        Ok(Response::new(RemoveWatcherResponse {}))
    }
}
