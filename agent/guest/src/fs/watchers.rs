//! Polled watches (`CreateWatcher`, `GetWatcherEvents`, `RemoveWatcher`):
//! the same inotify watch as `WatchDir`, its events kept until fetched.
//! E2B's synchronous Python SDK watches this way.
//!
//! A watcher lives until removed (or the agent stops); one whose directory
//! is gone keeps the events it had. Each keeps at most [`MAX_EVENTS`]
//! unfetched events (the oldest go first, and the loss is logged), and at
//! most [`MAX_WATCHERS`] exist at once, so a client that never polls or
//! never removes costs bounded memory.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tonic::Status;
use wrenn_proto::filesystem::FilesystemEvent;
use wrenn_proto::filesystem::watch_dir_response::Event;

use super::watch::watch;
use crate::users::UserDb;

/// Unfetched events one watcher keeps.
pub const MAX_EVENTS: usize = 10_000;
/// Watchers alive at once.
pub const MAX_WATCHERS: usize = 256;

struct Polled {
    events: Arc<Mutex<VecDeque<FilesystemEvent>>>,
    task: JoinHandle<()>,
}

/// Every polled watcher of this agent, by id.
#[derive(Default)]
pub struct Watchers {
    next: AtomicU64,
    map: Mutex<HashMap<String, Polled>>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers")
            .field("count", &self.lock().len())
            .finish()
    }
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Polled>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching `path`; returns the watcher's id.
    pub fn create(
        &self,
        path: PathBuf,
        recursive: bool,
        entries: Option<Arc<UserDb>>,
    ) -> Result<String, Status> {
        if self.lock().len() >= MAX_WATCHERS {
            return Err(Status::resource_exhausted(format!(
                "{MAX_WATCHERS} watchers exist already; remove one (RemoveWatcher) first"
            )));
        }
        let mut rx = watch(path.clone(), recursive, entries).map_err(Status::from)?;
        let id = format!("w{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let events = Arc::new(Mutex::new(VecDeque::new()));
        let kept = events.clone();
        let watcher = id.clone();
        let task = tokio::spawn(async move {
            let mut dropped: u64 = 0;
            while let Some(message) = rx.recv().await {
                let Some(Event::Filesystem(event)) = message.event else {
                    continue;
                };
                let mut events = kept.lock().unwrap_or_else(|e| e.into_inner());
                if events.len() >= MAX_EVENTS {
                    events.pop_front();
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(watcher, path = %path.display(), dropped, "watcher not polled: dropping its oldest events");
                    }
                }
                events.push_back(event);
            }
        });
        self.lock().insert(id.clone(), Polled { events, task });
        Ok(id)
    }

    /// The events since the previous call, oldest first.
    pub fn take(&self, id: &str) -> Result<Vec<FilesystemEvent>, Status> {
        let map = self.lock();
        let polled = map.get(id).ok_or_else(|| unknown(id))?;
        let mut events = polled.events.lock().unwrap_or_else(|e| e.into_inner());
        Ok(events.drain(..).collect())
    }

    /// Stops the watcher and forgets its events.
    pub fn remove(&self, id: &str) -> Result<(), Status> {
        let polled = self.lock().remove(id).ok_or_else(|| unknown(id))?;
        polled.task.abort();
        Ok(())
    }
}

fn unknown(id: &str) -> Status {
    Status::not_found(format!("watcher {id:?} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wrenn_proto::filesystem::EventType;

    async fn poll_until(w: &Watchers, id: &str, want: usize) -> Vec<FilesystemEvent> {
        let mut got = Vec::new();
        for _ in 0..200 {
            got.extend(w.take(id).unwrap());
            if got.len() >= want {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        got
    }

    #[tokio::test]
    async fn events_are_kept_until_fetched_and_fetched_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watchers::default();
        let users = Arc::new(UserDb::system());
        let id = w.create(dir.path().to_owned(), false, Some(users)).unwrap();
        std::fs::write(dir.path().join("a.txt"), b"hi").unwrap();
        let events = poll_until(&w, &id, 2).await;
        assert!(
            events
                .iter()
                .any(|e| e.name == "a.txt" && e.r#type == EventType::Create as i32),
            "{events:?}"
        );
        let entry = events[0].entry.as_ref().expect("include_entry");
        assert_eq!(entry.name, "a.txt");
        // Fetched once: nothing new since.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(w.take(&id).unwrap().is_empty());
        w.remove(&id).unwrap();
        assert_eq!(w.take(&id).unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(w.remove(&id).unwrap_err().code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn a_missing_directory_is_not_found_and_creates_no_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watchers::default();
        let err = w.create(dir.path().join("nope"), false, None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
        assert!(w.lock().is_empty());
    }
}
