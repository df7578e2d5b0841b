//! `wrenn pty <id> [-- cmd args…]` — an interactive terminal in a sandbox.
//!
//! The local terminal is put in raw mode (so Ctrl-C, Ctrl-D, arrows and
//! full-screen programs go to the remote side) and restored on every way out:
//! normal end, error, SIGTERM/SIGHUP, or panic in the main task. The window size
//! follows SIGWINCH. The session ends when the remote process exits (Ctrl-D in
//! a shell), and `wrenn pty` exits with its exit code.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use anyhow::{Context, Result, bail};
use clap::Args;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_proto::process::{ProcessConfig, Pty, StartRequest, process_event, pty};
use wrenn_proto::wrenn::v1::{PathRequest, PtyRequest, PtyStart, pty_request};

use crate::client::GlobalArgs;

#[derive(Args)]
pub struct PtyArgs {
    /// Sandbox id.
    id: String,
    /// Run as this user (default root).
    #[arg(long, short)]
    user: Option<String>,
    /// Working directory (default: the user's home).
    #[arg(long)]
    cwd: Option<String>,
    /// Command to run instead of a login shell (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

/// Restores the terminal's settings when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("read terminal settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw)
            .context("put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

fn window_size() -> Option<pty::Size> {
    crate::sys::window_size().map(|(cols, rows)| pty::Size {
        cols: cols.into(),
        rows: rows.into(),
    })
}

pub async fn run(g: &GlobalArgs, a: PtyArgs) -> Result<i32> {
    let mut c = g.connect().await?;
    let (cmd, args) = match a.command.split_first() {
        Some((cmd, args)) => (cmd.clone(), args.to_vec()),
        None => default_shell(&mut c, &a.id).await?,
    };
    let tty = std::io::stdin().is_terminal();
    let size = window_size().unwrap_or(pty::Size { cols: 80, rows: 24 });
    let mut envs = std::collections::HashMap::new();
    envs.insert(
        "TERM".to_owned(),
        std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".to_owned()),
    );

    let (tx, rx) = mpsc::channel::<PtyRequest>(256);
    tx.send(PtyRequest {
        event: Some(pty_request::Event::Start(PtyStart {
            sandbox_id: a.id.clone(),
            start: Some(StartRequest {
                process: Some(ProcessConfig {
                    cmd,
                    args,
                    envs,
                    cwd: a.cwd,
                }),
                pty: Some(Pty { size: Some(size) }),
                tag: None,
                stdin: Some(true),
                user: a.user,
            }),
        })),
    })
    .await?;
    let mut events = c
        .pty(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("open a terminal in sandbox {}", a.id))?
        .into_inner();

    let _raw = if tty { Some(RawMode::enter()?) } else { None };
    spawn_stdin_pump(tx.clone(), tty);

    let mut winch = signal(SignalKind::window_change())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut out = std::io::stdout();
    loop {
        let msg = tokio::select! {
            m = events.message() => m,
            _ = winch.recv() => {
                if let Some(s) = window_size() {
                    let _ = tx.send(PtyRequest { event: Some(pty_request::Event::Resize(s)) }).await;
                }
                continue;
            }
            _ = term.recv() => return Ok(128 + libc::SIGTERM),
            _ = hup.recv() => return Ok(128 + libc::SIGHUP),
        };
        let Some(resp) = msg.with_context(|| format!("terminal stream from sandbox {}", a.id))?
        else {
            bail!(
                "the terminal stream from sandbox {} ended before the process did",
                a.id
            );
        };
        match resp.event.and_then(|e| e.event) {
            Some(process_event::Event::Data(d)) => {
                if let Some(
                    process_event::data_event::Output::Pty(b)
                    | process_event::data_event::Output::Stdout(b)
                    | process_event::data_event::Output::Stderr(b),
                ) = d.output
                {
                    out.write_all(&b)?;
                    out.flush()?;
                }
            }
            Some(process_event::Event::End(e)) => return Ok(e.exit_code),
            Some(process_event::Event::Start(_) | process_event::Event::Keepalive(_)) | None => {}
        }
    }
}

/// Reads local stdin on a blocking thread and forwards it as PTY input. When
/// stdin is not a terminal and reaches EOF, sends Ctrl-D so the remote shell
/// sees end of input too.
fn spawn_stdin_pump(tx: mpsc::Sender<PtyRequest>, tty: bool) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    if !tty {
                        let _ = tx.blocking_send(PtyRequest {
                            event: Some(pty_request::Event::Input(vec![4])),
                        });
                    }
                    return;
                }
                Ok(n) => n,
            };
            let ev = PtyRequest {
                event: Some(pty_request::Event::Input(buf[..n].to_vec())),
            };
            if tx.blocking_send(ev).is_err() {
                return;
            }
        }
    });
}

/// `/bin/bash -l` when the sandbox has bash, else `/bin/sh -l`.
async fn default_shell(c: &mut crate::client::Client, id: &str) -> Result<(String, Vec<String>)> {
    let has_bash = c
        .stat(PathRequest {
            sandbox_id: id.to_owned(),
            path: "/bin/bash".to_owned(),
        })
        .await;
    match has_bash {
        Ok(_) => Ok(("/bin/bash".to_owned(), vec!["-l".to_owned()])),
        Err(s) if s.code() == tonic::Code::NotFound => {
            Ok(("/bin/sh".to_owned(), vec!["-l".to_owned()]))
        }
        Err(s) => Err(anyhow::Error::new(s).context(format!("open a terminal in sandbox {id}"))),
    }
}
