//! Processes in the fake's sandboxes: exec echoes its command line, exec
//! streams count lines, the PTY echoes, and the rest is recorded.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::state::FakeState;
use crate::process::{self as pp, ProcessEvent, process_event};
use crate::wrenn::v1::*;

pub(super) type Events = ReceiverStream<Result<ProcessEvent, Status>>;
pub(super) type PtyEvents = ReceiverStream<Result<PtyResponse, Status>>;

/// Records its call when dropped (the end of a session, however it ended).
struct Recorder(Arc<FakeState>, String);

impl Drop for Recorder {
    fn drop(&mut self) {
        let call = std::mem::take(&mut self.1);
        self.0.record(call);
    }
}

fn event(e: process_event::Event) -> ProcessEvent {
    ProcessEvent { event: Some(e) }
}

fn start(pid: u32) -> ProcessEvent {
    event(process_event::Event::Start(process_event::StartEvent {
        pid,
    }))
}

fn data(bytes: Vec<u8>) -> ProcessEvent {
    event(process_event::Event::Data(process_event::DataEvent {
        output: Some(process_event::data_event::Output::Pty(bytes)),
    }))
}

fn end(code: i32, exited: bool, status: &str) -> ProcessEvent {
    event(process_event::Event::End(process_event::EndEvent {
        exit_code: code,
        exited,
        status: status.to_owned(),
        error: None,
    }))
}

/// `cmd args…` echoed on stdout, `stderr` on stderr; `exit N` exits N.
pub(super) fn exec(state: &FakeState, r: ExecRequest) -> Result<ExecResponse, Status> {
    state.exists(&r.sandbox_id)?;
    let p = r
        .start
        .and_then(|s| s.process)
        .ok_or_else(|| Status::invalid_argument("start.process: missing"))?;
    state.record(format!("exec {} {}", r.sandbox_id, p.cmd));
    let exit_code = if p.cmd == "exit" {
        p.args.first().and_then(|a| a.parse().ok()).unwrap_or(1)
    } else {
        0
    };
    let mut line = p.cmd.clone();
    for a in &p.args {
        line.push(' ');
        line.push_str(a);
    }
    line.push('\n');
    Ok(ExecResponse {
        stdout: line.into_bytes(),
        stderr: b"stderr\n".to_vec(),
        exit_code,
        exited: true,
        status: format!("exit status {exit_code}"),
        truncated: false,
        pid: 42,
    })
}

/// start, `args[0]` (default 3) numbered stdout lines, end.
pub(super) fn exec_stream(state: &FakeState, r: ExecRequest) -> Result<Events, Status> {
    state.exists(&r.sandbox_id)?;
    let n: u32 = r
        .start
        .and_then(|s| s.process)
        .and_then(|p| p.args.first().and_then(|a| a.parse().ok()))
        .unwrap_or(3);
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _ = tx.send(Ok(start(42))).await;
        for i in 0..n {
            let out = process_event::data_event::Output::Stdout(format!("line {i}\n").into_bytes());
            let ev = event(process_event::Event::Data(process_event::DataEvent {
                output: Some(out),
            }));
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(end(0, true, "exit status 0"))).await;
    });
    Ok(ReceiverStream::new(rx))
}

/// Echoes input; reports resizes as text; a signal ends the session.
/// Records `pty <id>` at the start and `pty closed <id>` at the end.
pub(super) async fn pty(
    state: &Arc<FakeState>,
    mut inbound: Streaming<PtyRequest>,
) -> Result<PtyEvents, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty"))?;
    let id = match first.event {
        Some(pty_request::Event::Start(s)) => s.sandbox_id,
        Some(pty_request::Event::Attach(a)) => a.sandbox_id,
        _ => {
            return Err(Status::invalid_argument(
                "first message must be start or attach",
            ));
        }
    };
    state.exists(&id)?;
    state.record(format!("pty {id}"));
    let (tx, rx) = mpsc::channel(16);
    let state = state.clone();
    tokio::spawn(async move {
        let _closed = Recorder(state, format!("pty closed {id}"));
        let send = |e: ProcessEvent| {
            let tx = tx.clone();
            async move { tx.send(Ok(PtyResponse { event: Some(e) })).await.is_ok() }
        };
        send(start(7)).await;
        while let Ok(Some(msg)) = inbound.message().await {
            let ok = match msg.event {
                Some(pty_request::Event::Input(b)) => send(data(b)).await,
                Some(pty_request::Event::Resize(s)) => {
                    send(data(format!("resize {}x{}", s.cols, s.rows).into_bytes())).await
                }
                Some(pty_request::Event::Signal(_)) => {
                    send(end(130, false, "signal: interrupt")).await;
                    return;
                }
                _ => true,
            };
            if !ok {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Recorded as `background <id>`; pid 100.
pub(super) fn start_background(
    state: &FakeState,
    r: StartBackgroundRequest,
) -> Result<StartBackgroundResponse, Status> {
    state.exists(&r.sandbox_id)?;
    state.record(format!("background {}", r.sandbox_id));
    Ok(StartBackgroundResponse { pid: 100 })
}

/// One process: pid 100, tag `srv`.
pub(super) fn list(state: &FakeState, r: SandboxRef) -> Result<pp::ListResponse, Status> {
    state.exists(&r.sandbox_id)?;
    let p = pp::ProcessInfo {
        pid: 100,
        tag: Some("srv".into()),
        config: None,
    };
    Ok(pp::ListResponse { processes: vec![p] })
}

/// Recorded as `kill <id> <selector>`.
pub(super) fn kill(
    state: &FakeState,
    r: KillProcessRequest,
) -> Result<KillProcessResponse, Status> {
    state.exists(&r.sandbox_id)?;
    state.record(format!(
        "kill {} {:?}",
        r.sandbox_id,
        r.process.and_then(|p| p.selector)
    ));
    Ok(KillProcessResponse {})
}

/// Start (pid 100), then a clean exit.
pub(super) fn connect(state: &FakeState, r: ConnectProcessRequest) -> Result<Events, Status> {
    state.exists(&r.sandbox_id)?;
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(Ok(start(100))).ok();
    tx.try_send(Ok(end(0, true, "exit status 0"))).ok();
    Ok(ReceiverStream::new(rx))
}

/// Recorded as `input <id>`.
pub(super) fn send_input(
    state: &FakeState,
    r: SendInputRequest,
) -> Result<pp::SendInputResponse, Status> {
    state.exists(&r.sandbox_id)?;
    state.record(format!("input {}", r.sandbox_id));
    Ok(pp::SendInputResponse {})
}
