//! `WatchDir`: inotify events for a directory (and, if recursive, its
//! subdirectories, including ones created while watching).
//!
//! Events map as fsnotify does (what envd reports): create and moved-in →
//! `CREATE`, modify → `WRITE`, delete → `REMOVE`, moved-out → `RENAME`, attribute
//! change → `CHMOD`. Names are relative to the watched directory. The stream
//! starts with a `start` event once the watches are in place, and ends when the
//! watched directory is removed or the client goes away.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::sys::InotifyFd;
use wrenn_proto::filesystem::watch_dir_response::{Event, StartEvent};
use wrenn_proto::filesystem::{EventType, FilesystemEvent, WatchDirResponse};

use super::FsError;
use super::entry::entry_info;
use crate::stream::STREAM_CAPACITY;
use crate::users::UserDb;

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

struct Watcher {
    inotify: AsyncFd<InotifyFd>,
    root: PathBuf,
    recursive: bool,
    /// With `include_entry`: describes each event's entry.
    entries: Option<Arc<UserDb>>,
    /// Watch descriptor → directory relative to `root` (`""` for the root).
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

/// Starts watching `path` (a directory); with `entries`, every event
/// carries the entry as it is right after the event (when it still exists).
pub fn watch(
    path: PathBuf,
    recursive: bool,
    entries: Option<Arc<UserDb>>,
) -> Result<mpsc::Receiver<WatchDirResponse>, FsError> {
    let meta = std::fs::metadata(&path).map_err(FsError::io("watch", &path))?;
    if !meta.is_dir() {
        return Err(FsError::NotDir { op: "watch", path });
    }
    let inotify =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| FsError::Io {
            op: "inotify_init",
            path: path.clone(),
            source: e.into(),
        })?;
    let inotify = crate::sys::register(InotifyFd(inotify)).map_err(|e| FsError::Io {
        op: "watch",
        path: path.clone(),
        source: e.into_parts().1,
    })?;
    let mut watcher = Watcher {
        inotify,
        root: path,
        recursive,
        entries,
        dirs: HashMap::new(),
    };
    watcher.add(PathBuf::new())?;
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    let _ = tx.try_send(WatchDirResponse {
        event: Some(Event::Start(StartEvent {})),
    });
    tokio::spawn(watcher.run(tx));
    Ok(rx)
}

impl Watcher {
    /// Watches `root/rel` and, if recursive, every directory below it.
    fn add(&mut self, rel: PathBuf) -> Result<(), FsError> {
        let dir = self.root.join(&rel);
        let wd = self
            .inotify
            .get_ref()
            .0
            .add_watch(&dir, mask())
            .map_err(|e| FsError::Io {
                op: "watch",
                path: dir.clone(),
                source: e.into(),
            })?;
        self.dirs.insert(wd, rel.clone());
        if self.recursive
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Err(err) = self.add(rel.join(entry.file_name()))
                {
                    tracing::debug!(error = %err, "not watching subdirectory");
                }
            }
        }
        Ok(())
    }

    async fn run(mut self, tx: mpsc::Sender<WatchDirResponse>) {
        loop {
            let events = tokio::select! {
                _ = tx.closed() => return,
                ready = self.inotify.readable() => match ready {
                    Ok(_guard) => self.inotify.try_io(Interest::READABLE, |i| {
                        i.0.read_events().map_err(io::Error::from)
                    }),
                    Err(e) => Err(e),
                },
            };
            let events = match events {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!(root = %self.root.display(), error = %e, "reading inotify events");
                    return;
                }
            };
            for event in events {
                match self.translate(&event) {
                    Translated::Send(out) => {
                        if tx.send(*out).await.is_err() {
                            return;
                        }
                    }
                    Translated::Skip => {}
                    Translated::RootGone => return,
                }
            }
        }
    }

    fn translate(&mut self, event: &InotifyEvent) -> Translated {
        let flags = event.mask;
        if flags.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            tracing::warn!(root = %self.root.display(), "inotify queue overflowed; events were lost");
            return Translated::Skip;
        }
        if flags.contains(AddWatchFlags::IN_IGNORED) {
            return match self.dirs.remove(&event.wd) {
                Some(rel) if rel.as_os_str().is_empty() => Translated::RootGone,
                _ => Translated::Skip,
            };
        }
        let Some(dir) = self.dirs.get(&event.wd) else {
            return Translated::Skip;
        };
        if flags.contains(AddWatchFlags::IN_DELETE_SELF) {
            // Reported by the parent's IN_DELETE (or, for the root, IN_IGNORED next).
            return Translated::Skip;
        }
        let rel = match &event.name {
            // An upload's temporary file: the rename to its name is the
            // event a watcher sees (as a create).
            Some(name) if super::transfer::is_upload_temp(name) => return Translated::Skip,
            Some(name) => dir.join(name),
            None => dir.clone(),
        };
        let kind = if flags.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
            if self.recursive
                && flags.contains(AddWatchFlags::IN_ISDIR)
                && let Err(err) = self.add(rel.clone())
            {
                tracing::debug!(error = %err, "not watching new subdirectory");
            }
            EventType::Create
        } else if flags.contains(AddWatchFlags::IN_MODIFY) {
            EventType::Write
        } else if flags.contains(AddWatchFlags::IN_DELETE) {
            EventType::Remove
        } else if flags.contains(AddWatchFlags::IN_MOVED_FROM) {
            EventType::Rename
        } else if flags.contains(AddWatchFlags::IN_ATTRIB) {
            EventType::Chmod
        } else {
            return Translated::Skip;
        };
        let entry = self
            .entries
            .as_ref()
            .and_then(|users| entry_info(&self.root.join(&rel), users).ok());
        Translated::Send(Box::new(WatchDirResponse {
            event: Some(Event::Filesystem(FilesystemEvent {
                name: lossy(&rel),
                r#type: kind as i32,
                entry,
            })),
        }))
    }
}

enum Translated {
    Send(Box<WatchDirResponse>),
    Skip,
    RootGone,
}

fn lossy(path: &Path) -> String {
    OsStr::new(path).to_string_lossy().into_owned()
}
