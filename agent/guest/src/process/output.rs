//! Output of a process: one pump task per stream (stdout, stderr or the PTY)
//! reading as data arrives and handing each chunk to every attached client.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use wrenn_proto::process::ProcessEvent;
use wrenn_proto::process::process_event::{DataEvent, EndEvent, Event, StartEvent, data_event};

use crate::stream::STREAM_CAPACITY;

/// Largest chunk read (and sent as one `data` event) at once.
pub const READ_CHUNK: usize = 64 * 1024;
/// After the process exited, a stream still held open by its descendants is read
/// until it has been idle this long...
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// ...or this much more has been read, whichever comes first.
const DRAIN_LIMIT: usize = 4 << 20;

/// Something the agent reads process output from without blocking.
pub trait Source: Send + Sync + 'static {
    /// Reads what is available; `WouldBlock` when nothing is.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Resolves once a read may make progress.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Whether a read error means "the writer side is gone" (PTY: `EIO`).
    fn is_eof_error(_err: &io::Error) -> bool {
        false
    }
}

impl Source for pipe::Receiver {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        pipe::Receiver::try_read(self, buf)
    }

    async fn readable(&self) -> io::Result<()> {
        pipe::Receiver::readable(self).await
    }
}

impl<S: Source> Source for Arc<S> {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        S::try_read(self, buf)
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        S::readable(self)
    }

    fn is_eof_error(err: &io::Error) -> bool {
        S::is_eof_error(err)
    }
}

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
    Pty,
}

impl Output {
    fn event(self, bytes: Vec<u8>) -> ProcessEvent {
        let output = match self {
            Output::Stdout => data_event::Output::Stdout(bytes),
            Output::Stderr => data_event::Output::Stderr(bytes),
            Output::Pty => data_event::Output::Pty(bytes),
        };
        ProcessEvent {
            event: Some(Event::Data(DataEvent {
                output: Some(output),
            })),
        }
    }
}

/// `start{pid}`: the first event of every stream.
pub fn start_event(pid: u32) -> ProcessEvent {
    ProcessEvent {
        event: Some(Event::Start(StartEvent { pid })),
    }
}

/// `end{...}`: the last event of every stream.
pub fn end_event(end: EndEvent) -> ProcessEvent {
    ProcessEvent {
        event: Some(Event::End(end)),
    }
}

/// The clients attached to one process, and how it ended once it has.
#[derive(Debug, Default)]
pub struct Fanout {
    state: Mutex<FanoutState>,
}

#[derive(Debug, Default)]
struct FanoutState {
    subscribers: Vec<mpsc::Sender<ProcessEvent>>,
    end: Option<EndEvent>,
}

impl Fanout {
    fn lock(&self) -> MutexGuard<'_, FanoutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a client. It receives `start{pid}`, then every chunk published
    /// from now on and `end`; if the process has already ended, `start` and `end`
    /// right away.
    pub fn subscribe(&self, pid: u32) -> mpsc::Receiver<ProcessEvent> {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let mut state = self.lock();
        // The channel is new and empty, so these cannot fail for lack of room.
        let _ = tx.try_send(start_event(pid));
        match &state.end {
            Some(end) => drop(tx.try_send(end_event(end.clone()))),
            None => state.subscribers.push(tx),
        }
        rx
    }

    /// How the process ended, once it has.
    pub fn end(&self) -> Option<EndEvent> {
        self.lock().end.clone()
    }

    /// Sends `event` to every attached client, waiting while a client's buffer is
    /// full (back pressure on this process only). Clients that went away are
    /// dropped; with no clients the event is discarded.
    pub async fn publish(&self, event: ProcessEvent) {
        let subscribers = self.lock().subscribers.clone();
        let Some((last, rest)) = subscribers.split_last() else {
            return;
        };
        let mut gone = Vec::new();
        for tx in rest {
            if tx.send(event.clone()).await.is_err() {
                gone.push(tx);
            }
        }
        if last.send(event).await.is_err() {
            gone.push(last);
        }
        if !gone.is_empty() {
            self.lock()
                .subscribers
                .retain(|tx| !gone.iter().any(|g| g.same_channel(tx)));
        }
    }

    /// Records the end and sends `end` to every attached client, which closes
    /// their streams. Called once, after every pump has finished.
    pub fn finish(&self, end: EndEvent) {
        let subscribers = {
            let mut state = self.lock();
            state.end = Some(end.clone());
            std::mem::take(&mut state.subscribers)
        };
        for tx in subscribers {
            let end = end_event(end.clone());
            // Behind a slow client's queued output; never block the others.
            tokio::spawn(async move { drop(tx.send(end).await) });
        }
    }
}

/// Reads `source` until end of file and publishes every chunk as `kind`. Once
/// `exited` turns true, it stops at end of file or when the stream has been idle
/// for [`DRAIN_IDLE`] (descendants that kept the fd open) or [`DRAIN_LIMIT`]
/// more bytes have been read.
pub async fn pump<S: Source>(
    source: S,
    kind: Output,
    fanout: Arc<Fanout>,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut after_exit = 0usize;
    loop {
        match source.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if *exited.borrow() {
                    after_exit += n;
                }
                fanout.publish(kind.event(buf[..n].to_vec())).await;
                if after_exit >= DRAIN_LIMIT {
                    tracing::debug!(?kind, "output still flowing after exit; stopped reading");
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if *exited.borrow_and_update() {
                    match tokio::time::timeout(DRAIN_IDLE, source.readable()).await {
                        Ok(Ok(())) => continue,
                        _ => return,
                    }
                }
                tokio::select! {
                    ready = source.readable() => if let Err(e) = ready {
                        tracing::warn!(?kind, error = %e, "waiting for output failed");
                        return;
                    },
                    changed = exited.changed() => if changed.is_err() {
                        return;
                    },
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if S::is_eof_error(&e) => return,
            Err(e) => {
                tracing::warn!(?kind, error = %e, "reading output failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(event: &ProcessEvent) -> &[u8] {
        match &event.event {
            Some(Event::Data(DataEvent {
                output: Some(data_event::Output::Stdout(b)),
            })) => b,
            other => panic!("not stdout data: {other:?}"),
        }
    }

    fn end(code: i32) -> EndEvent {
        EndEvent {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        }
    }

    #[tokio::test]
    async fn subscribers_get_output_from_when_they_attached() {
        let fanout = Fanout::default();
        let mut first = fanout.subscribe(7);
        fanout.publish(Output::Stdout.event(b"one".to_vec())).await;
        let mut second = fanout.subscribe(7);
        fanout.publish(Output::Stdout.event(b"two".to_vec())).await;
        fanout.finish(end(3));
        assert_eq!(first.recv().await.unwrap(), start_event(7));
        assert_eq!(data(&first.recv().await.unwrap()), b"one");
        assert_eq!(data(&first.recv().await.unwrap()), b"two");
        assert_eq!(first.recv().await.unwrap(), end_event(end(3)));
        assert!(first.recv().await.is_none());
        assert_eq!(second.recv().await.unwrap(), start_event(7));
        assert_eq!(data(&second.recv().await.unwrap()), b"two");
        assert_eq!(second.recv().await.unwrap(), end_event(end(3)));
        // After the end: start and end at once.
        let mut late = fanout.subscribe(7);
        assert_eq!(late.recv().await.unwrap(), start_event(7));
        assert_eq!(late.recv().await.unwrap(), end_event(end(3)));
        assert!(late.recv().await.is_none());
    }

    #[tokio::test]
    async fn departed_subscribers_are_dropped_and_others_keep_receiving() {
        let fanout = Fanout::default();
        let gone = fanout.subscribe(1);
        let mut stays = fanout.subscribe(1);
        drop(gone);
        fanout.publish(Output::Stdout.event(b"x".to_vec())).await;
        assert_eq!(fanout.lock().subscribers.len(), 1);
        stays.recv().await.unwrap();
        assert_eq!(data(&stays.recv().await.unwrap()), b"x");
    }

    #[tokio::test]
    async fn pump_reads_a_pipe_to_the_end() {
        let (tx, rx) = pipe::pipe().unwrap();
        let fanout = Arc::new(Fanout::default());
        let mut sub = fanout.subscribe(1);
        let (_exited_tx, exited) = watch::channel(false);
        let task = tokio::spawn(pump(rx, Output::Stdout, fanout.clone(), exited));
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let payload = payload.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let mut tx = tx;
                tx.write_all(&payload).await.unwrap();
            })
        };
        let mut got = Vec::new();
        sub.recv().await.unwrap();
        while got.len() < payload.len() {
            got.extend_from_slice(data(&sub.recv().await.unwrap()));
        }
        writer.await.unwrap();
        task.await.unwrap();
        assert_eq!(got, payload);
    }

    #[tokio::test]
    async fn pump_stops_after_exit_when_a_descendant_keeps_the_pipe_open() {
        let (tx, rx) = pipe::pipe().unwrap();
        let fanout = Arc::new(Fanout::default());
        let (exited_tx, exited) = watch::channel(false);
        let task = tokio::spawn(pump(rx, Output::Stdout, fanout, exited));
        exited_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        drop(tx);
    }
}
