//! One started process as the agent tracks it: identity, input side, output
//! fan-out and, once it ended, its end status.

use std::io;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt as _;
use tokio::net::unix::pipe;
use tokio::sync::{Mutex, mpsc, watch};
use tonic::Status;
use wrenn_proto::process::process_event::EndEvent;
use wrenn_proto::process::{
    ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, Signal, process_input,
};

use super::output::Fanout;
use super::pty::{Pty, PtyError, WindowSize};
use crate::wire::chain;

/// Why an operation on a process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} has already ended ({status})")]
    Ended { pid: u32, status: String },
    #[error("process {pid} has no PTY")]
    NoPty { pid: u32 },
    #[error("process {pid} has a PTY: send ^D (0x04) as pty input to signal end of input")]
    HasPty { pid: u32 },
    #[error("stdin of process {pid} is closed (or was not requested)")]
    StdinClosed { pid: u32 },
    #[error("input is required")]
    MissingInput,
    #[error("signal {value} is not one of SIGHUP, SIGINT, SIGKILL, SIGTERM")]
    BadSignal { value: i32 },
    #[error("writing input to process {pid}")]
    Write {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("sending {signal} to process {pid}")]
    Signal {
        pid: u32,
        signal: &'static str,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    Pty(#[from] PtyError),
}

impl From<ProcError> for Status {
    fn from(err: ProcError) -> Self {
        use ProcError as E;
        match err {
            E::Pty(e) => e.into(),
            E::MissingInput | E::BadSignal { .. } => Status::invalid_argument(err.to_string()),
            E::Ended { .. } | E::NoPty { .. } | E::HasPty { .. } | E::StdinClosed { .. } => {
                Status::failed_precondition(err.to_string())
            }
            // The process closed its end of the input (exited or closed stdin).
            E::Write { ref source, .. }
                if matches!(source.raw_os_error(), Some(libc::EPIPE | libc::EIO)) =>
            {
                Status::failed_precondition(chain(&err))
            }
            E::Write { .. } | E::Signal { .. } => Status::internal(chain(&err)),
        }
    }
}

/// The input side of a process.
#[derive(Debug)]
pub enum Input {
    Pty(Arc<Pty>),
    /// `None` once closed, or when stdin was not requested.
    Pipe(Mutex<Option<pipe::Sender>>),
}

/// A process started by the agent.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    pub tag: Option<String>,
    /// As requested (envs are the request's, not the full environment).
    pub config: ProcessConfig,
    pub input: Input,
    pub fanout: Arc<Fanout>,
    ended: watch::Sender<bool>,
}

impl Proc {
    pub fn new(pid: u32, tag: Option<String>, config: ProcessConfig, input: Input) -> Self {
        let fanout = Arc::new(Fanout::default());
        Self {
            pid,
            tag,
            config,
            input,
            fanout,
            ended: watch::channel(false).0,
        }
    }

    pub fn is_running(&self) -> bool {
        self.fanout.end().is_none()
    }

    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: Some(self.config.clone()),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }

    /// A new client stream; see [`Fanout::subscribe`].
    pub fn subscribe(&self) -> mpsc::Receiver<ProcessEvent> {
        self.fanout.subscribe(self.pid)
    }

    fn check_running(&self) -> Result<(), ProcError> {
        match self.fanout.end() {
            Some(end) => Err(ProcError::Ended {
                pid: self.pid,
                status: end.status,
            }),
            None => Ok(()),
        }
    }

    /// Writes input, in order with other writers. PTY processes take either kind
    /// of input into the terminal; others only `stdin`.
    pub async fn write_input(&self, input: Option<ProcessInput>) -> Result<(), ProcError> {
        let input = input.and_then(|i| i.input).ok_or(ProcError::MissingInput)?;
        self.check_running()?;
        let pid = self.pid;
        let write_err = |source| ProcError::Write { pid, source };
        match (&self.input, input) {
            (
                Input::Pty(pty),
                process_input::Input::Pty(data) | process_input::Input::Stdin(data),
            ) => pty.write_all(&data).await.map_err(write_err),
            (Input::Pipe(_), process_input::Input::Pty(_)) => Err(ProcError::NoPty { pid }),
            (Input::Pipe(stdin), process_input::Input::Stdin(data)) => {
                let mut stdin = stdin.lock().await;
                let sender = stdin.as_mut().ok_or(ProcError::StdinClosed { pid })?;
                sender.write_all(&data).await.map_err(write_err)
            }
        }
    }

    /// Closes stdin so the process reads end of file.
    pub async fn close_stdin(&self) -> Result<(), ProcError> {
        self.check_running()?;
        match &self.input {
            Input::Pty(_) => Err(ProcError::HasPty { pid: self.pid }),
            Input::Pipe(stdin) => match stdin.lock().await.take() {
                Some(_closed) => Ok(()),
                None => Err(ProcError::StdinClosed { pid: self.pid }),
            },
        }
    }

    /// Resizes the terminal of a PTY process.
    pub fn resize(&self, size: WindowSize) -> Result<(), ProcError> {
        self.check_running()?;
        match &self.input {
            Input::Pty(pty) => Ok(pty.resize(size)?),
            Input::Pipe(_) => Err(ProcError::NoPty { pid: self.pid }),
        }
    }

    /// Sends `signal` to the process's group (it leads its own session), or to
    /// the process alone when the group is already gone.
    pub fn signal(&self, signal: i32) -> Result<(), ProcError> {
        let sig = match Signal::try_from(signal) {
            Ok(Signal::Sighup) => NixSignal::SIGHUP,
            Ok(Signal::Sigint) => NixSignal::SIGINT,
            Ok(Signal::Sigkill) => NixSignal::SIGKILL,
            Ok(Signal::Sigterm) => NixSignal::SIGTERM,
            Ok(Signal::Unspecified) | Err(_) => return Err(ProcError::BadSignal { value: signal }),
        };
        self.check_running()?;
        self.kill(sig).map_err(|source| ProcError::Signal {
            pid: self.pid,
            signal: sig.as_str(),
            source,
        })
    }

    /// `kill(-pgid)`, falling back to `kill(pid)`.
    pub fn kill(&self, sig: NixSignal) -> Result<(), Errno> {
        let pid = self.pid as i32;
        match kill(Pid::from_raw(-pid), sig) {
            Err(Errno::ESRCH) => kill(Pid::from_raw(pid), sig),
            other => other,
        }
    }

    /// Records the end: clients get `end`, input is released, waiters wake.
    pub fn finish(&self, end: EndEvent) {
        self.fanout.finish(end);
        if let Input::Pipe(stdin) = &self.input
            && let Ok(mut stdin) = stdin.try_lock()
        {
            stdin.take();
        }
        self.ended.send_replace(true);
    }

    /// Resolves once the process has ended and its output has been delivered.
    pub async fn wait_end(&self) {
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended).await;
    }
}
