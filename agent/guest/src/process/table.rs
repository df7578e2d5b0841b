//! Every process the agent started, by pid and by tag, from start until 60 s
//! after it ended.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;
use wrenn_proto::process::process_event::EndEvent;
use wrenn_proto::process::{ProcessConfig, ProcessEvent, ProcessSelector, process_selector};

use super::handle::{Input, Proc};
use super::output::{Output, pump};
use super::request::{SpawnError, SpawnSpec};
use super::spawn::{Io, spawn};
use crate::reaper::{ExitStatus, Reaper};
use crate::wire::end_event;

/// How long an ended process stays visible to `Connect` (its end status).
pub const END_RETENTION: Duration = Duration::from_secs(60);

/// Why a process could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("process selector is required (pid or tag)")]
    MissingSelector,
    #[error("no process with pid {pid}")]
    NoPid { pid: u32 },
    #[error("no process with tag {tag:?}")]
    NoTag { tag: String },
    #[error("tag {tag:?} is already used by running process {pid}")]
    TagInUse { tag: String, pid: u32 },
    #[error("tag {tag:?} is being used by a process that is starting")]
    TagStarting { tag: String },
    #[error("tag is empty")]
    EmptyTag,
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

impl From<TableError> for Status {
    fn from(err: TableError) -> Self {
        use TableError as E;
        match err {
            E::Spawn(e) => e.into(),
            E::MissingSelector | E::EmptyTag => Status::invalid_argument(err.to_string()),
            E::NoPid { .. } | E::NoTag { .. } => Status::not_found(err.to_string()),
            E::TagInUse { .. } | E::TagStarting { .. } => Status::already_exists(err.to_string()),
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    by_pid: HashMap<u32, Arc<Proc>>,
    tags: HashMap<String, u32>,
    /// Tags of processes being started right now.
    starting: HashSet<String>,
}

/// The process table; see the module docs.
#[derive(Debug)]
pub struct ProcessTable {
    entries: Mutex<Entries>,
    reaper: Arc<Reaper>,
    retention: Duration,
}

impl ProcessTable {
    pub fn new(reaper: Arc<Reaper>, retention: Duration) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::default(),
            reaper,
            retention,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a process and returns it with the stream of its first client (the
    /// caller of `Start`), which sees every byte of output.
    pub fn start(
        self: &Arc<Self>,
        spec: &SpawnSpec,
        config: ProcessConfig,
        tag: Option<String>,
    ) -> Result<(Arc<Proc>, mpsc::Receiver<ProcessEvent>), TableError> {
        let _reservation = tag.as_deref().map(|t| self.reserve_tag(t)).transpose()?;
        let began = std::time::Instant::now();
        let spawned = spawn(spec, &self.reaper)?;
        let spawn_us = began.elapsed().as_micros() as u64;
        let pid = spawned.pid;
        let (exited_tx, exited_rx) = watch::channel(false);
        let (input, pumps) = match spawned.io {
            Io::Pty(pty) => {
                let pty = Arc::new(pty);
                (Input::Pty(pty.clone()), vec![(Output::Pty, Pump::Pty(pty))])
            }
            Io::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                Input::Pipe(tokio::sync::Mutex::new(stdin)),
                vec![
                    (Output::Stdout, Pump::Pipe(stdout)),
                    (Output::Stderr, Pump::Pipe(stderr)),
                ],
            ),
        };
        let proc = Arc::new(Proc::new(pid, tag, config, input));
        // Subscribed before any pump runs: the first client misses nothing.
        let events = proc.subscribe();
        self.insert(proc.clone());
        let pumps = pumps
            .into_iter()
            .map(|(kind, source)| {
                let (fanout, exited) = (proc.fanout.clone(), exited_rx.clone());
                match source {
                    Pump::Pty(pty) => tokio::spawn(pump(pty, kind, fanout, exited)),
                    Pump::Pipe(pipe) => tokio::spawn(pump(pipe, kind, fanout, exited)),
                }
            })
            .collect();
        tokio::spawn(
            self.clone()
                .supervise(proc.clone(), spawned.exit, exited_tx, pumps),
        );
        tracing::debug!(
            pid,
            tag = proc.tag.as_deref(),
            cmd = %spec.program,
            user = %spec.user.name,
            spawn_us,
            "process started"
        );
        Ok((proc, events))
    }

    /// Waits for the exit, lets the pumps drain, publishes the end and retires
    /// the entry after the retention period.
    async fn supervise(
        self: Arc<Self>,
        proc: Arc<Proc>,
        exit: oneshot::Receiver<ExitStatus>,
        exited: watch::Sender<bool>,
        pumps: Vec<tokio::task::JoinHandle<()>>,
    ) {
        let end = match exit.await {
            Ok(status) => end_event(status),
            Err(_) => EndEvent {
                exit_code: -1,
                exited: false,
                status: "unknown".into(),
                error: Some("the exit status was lost: the reaper stopped".into()),
            },
        };
        exited.send_replace(true);
        for pump in pumps {
            let _ = pump.await;
        }
        tracing::debug!(pid = proc.pid, status = %end.status, "process ended");
        proc.finish(end);
        tokio::time::sleep(self.retention).await;
        self.remove(&proc);
    }

    fn reserve_tag(&self, tag: &str) -> Result<TagReservation<'_>, TableError> {
        if tag.is_empty() {
            return Err(TableError::EmptyTag);
        }
        let mut entries = self.lock();
        if let Some(pid) = entries.tags.get(tag).copied()
            && entries.by_pid.get(&pid).is_some_and(|p| p.is_running())
        {
            return Err(TableError::TagInUse {
                tag: tag.into(),
                pid,
            });
        }
        if !entries.starting.insert(tag.to_owned()) {
            return Err(TableError::TagStarting { tag: tag.into() });
        }
        Ok(TagReservation {
            table: self,
            tag: tag.to_owned(),
        })
    }

    fn insert(&self, proc: Arc<Proc>) {
        let mut entries = self.lock();
        let pid = proc.pid;
        if let Some(tag) = &proc.tag {
            entries.tags.insert(tag.clone(), pid);
        }
        // A reused pid replaces an ended entry; its tag must not point here.
        if let Some(old) = entries.by_pid.insert(pid, proc.clone())
            && let Some(old_tag) = &old.tag
            && proc.tag.as_ref() != Some(old_tag)
            && entries.tags.get(old_tag) == Some(&pid)
        {
            entries.tags.remove(old_tag);
        }
    }

    fn remove(&self, proc: &Arc<Proc>) {
        let mut entries = self.lock();
        if entries
            .by_pid
            .get(&proc.pid)
            .is_some_and(|p| Arc::ptr_eq(p, proc))
        {
            entries.by_pid.remove(&proc.pid);
            if let Some(tag) = &proc.tag
                && entries.tags.get(tag) == Some(&proc.pid)
            {
                entries.tags.remove(tag);
            }
        }
    }

    /// The process `selector` names, running or ended within the retention.
    pub fn get(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Proc>, TableError> {
        let selector = selector
            .and_then(|s| s.selector.as_ref())
            .ok_or(TableError::MissingSelector)?;
        let entries = self.lock();
        match selector {
            process_selector::Selector::Pid(pid) => entries
                .by_pid
                .get(pid)
                .cloned()
                .ok_or(TableError::NoPid { pid: *pid }),
            process_selector::Selector::Tag(tag) => entries
                .tags
                .get(tag)
                .and_then(|pid| entries.by_pid.get(pid))
                .filter(|p| p.tag.as_ref() == Some(tag))
                .cloned()
                .ok_or_else(|| TableError::NoTag { tag: tag.clone() }),
        }
    }

    /// Processes that have not ended, by pid.
    pub fn running(&self) -> Vec<Arc<Proc>> {
        let mut running: Vec<_> = self
            .lock()
            .by_pid
            .values()
            .filter(|p| p.is_running())
            .cloned()
            .collect();
        running.sort_by_key(|p| p.pid);
        running
    }
}

enum Pump {
    Pty(Arc<super::pty::Pty>),
    Pipe(tokio::net::unix::pipe::Receiver),
}

/// Releases a tag reserved for a starting process.
struct TagReservation<'a> {
    table: &'a ProcessTable,
    tag: String,
}

impl Drop for TagReservation<'_> {
    fn drop(&mut self) {
        self.table.lock().starting.remove(&self.tag);
    }
}

#[cfg(test)]
mod tests;
