//! Exec (unary: output collected up to a limit) and ExecStream (relayed).

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::debug;
use wrenn_proto::process::{
    self as pp, ProcessEvent, ProcessSelector, SendSignalRequest, Signal, StartResponse,
    process_event::{Event, data_event::Output},
    process_selector::Selector,
};
use wrenn_proto::wrenn::v1 as pb;

use super::relay::{self, RelayStream};
use super::{AgentService, guest_err, invalid};
use crate::guest::Guest;
use crate::manager::Sandbox;

/// Output kept by a unary Exec whose request leaves `output_limit` 0.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;
/// Largest `output_limit` accepted: the response is held in memory.
pub const MAX_OUTPUT_LIMIT: u64 = 256 * 1024 * 1024;
/// How long unary Exec waits for the guest to close a finished process's stream.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Checks a process start request; `pty` says whether a terminal is wanted.
pub(crate) fn check_start(
    field: &str,
    start: Option<pp::StartRequest>,
    pty: bool,
) -> Result<pp::StartRequest, Status> {
    let start = start.ok_or_else(|| invalid(field, "missing"))?;
    let cmd = start.process.as_ref().map(|p| p.cmd.as_str()).unwrap_or("");
    if cmd.is_empty() {
        return Err(invalid(&format!("{field}.process.cmd"), "empty command"));
    }
    match (&start.pty, pty) {
        (Some(_), false) => Err(invalid(
            &format!("{field}.pty"),
            "must be unset (use Pty for a terminal)",
        )),
        (None, true) => Err(invalid(
            &format!("{field}.pty"),
            "required: the terminal's size",
        )),
        (Some(p), true) => match p.size {
            Some(s) if s.cols > 0 && s.rows > 0 => Ok(start),
            _ => Err(invalid(
                &format!("{field}.pty.size"),
                "cols and rows must both be above 0",
            )),
        },
        (None, false) => Ok(start),
    }
}

/// Starts a process in the guest and waits for its start event: the pid and
/// the rest of its event stream.
pub(crate) async fn start_process(
    sb: &Sandbox,
    guest: &Guest,
    start: pp::StartRequest,
) -> Result<(u32, Streaming<StartResponse>), Status> {
    let mut events = guest
        .process()
        .start(start)
        .await
        .map_err(|s| guest_err(sb, s))?
        .into_inner();
    loop {
        let first = tokio::select! {
            _ = sb.cancel.cancelled() => return Err(sb.ended_status()),
            m = events.message() => m.map_err(|s| guest_err(sb, s))?,
        };
        match first.and_then(|r| r.event).and_then(|e| e.event) {
            Some(Event::Start(s)) => return Ok((s.pid, events)),
            Some(Event::Keepalive(_)) => continue,
            other => {
                return Err(Status::internal(format!(
                    "sandbox {}: guest sent {other:?} before the process's start event",
                    sb.id
                )));
            }
        }
    }
}

/// Sends `signal` to `pid` in the guest.
pub(crate) async fn signal(guest: &Guest, pid: u32, signal: Signal) -> Result<(), Status> {
    guest
        .process()
        .send_signal(SendSignalRequest {
            process: Some(ProcessSelector {
                selector: Some(Selector::Pid(pid)),
            }),
            signal: signal as i32,
        })
        .await
        .map(drop)
}

/// Kills `pid` after `secs` unless `done` is cancelled first.
fn kill_after(guest: Guest, pid: u32, secs: u32, done: CancellationToken) {
    if secs == 0 {
        return;
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = done.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(secs.into())) => {
                debug!(pid, secs, "exec timed out; killing");
                let _ = signal(&guest, pid, Signal::Sigkill).await;
            }
        }
    });
}

pub async fn exec(svc: &AgentService, req: pb::ExecRequest) -> Result<pb::ExecResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let start = check_start("start", req.start, false)?;
    let limit = match req.output_limit {
        0 => DEFAULT_OUTPUT_LIMIT,
        n if n > MAX_OUTPUT_LIMIT => {
            return Err(invalid(
                "output_limit",
                format!("{n} bytes is above the maximum {MAX_OUTPUT_LIMIT}"),
            ));
        }
        n => n,
    } as usize;
    let (pid, mut events) = start_process(&sb, &guest, start).await?;
    let done = CancellationToken::new();
    let _done = done.clone().drop_guard();
    kill_after(guest.clone(), pid, req.timeout_secs, done);

    let mut out = pb::ExecResponse {
        pid,
        ..Default::default()
    };
    let mut kept = 0usize;
    loop {
        let msg = tokio::select! {
            _ = sb.cancel.cancelled() => return Err(sb.ended_status()),
            m = events.next() => m,
        };
        let ev = match msg {
            None => {
                return Err(Status::unavailable(format!(
                    "sandbox {}: the guest's stream for pid {pid} ended before the process did",
                    sb.id
                )));
            }
            Some(Err(s)) => return Err(guest_err(&sb, s)),
            Some(Ok(r)) => r.event.and_then(|e| e.event),
        };
        match ev {
            Some(Event::Data(d)) => {
                let (buf, data) = match d.output {
                    Some(Output::Stdout(b)) => (&mut out.stdout, b),
                    Some(Output::Stderr(b)) => (&mut out.stderr, b),
                    // No terminal here; nothing else carries output.
                    Some(Output::Pty(b)) => (&mut out.stdout, b),
                    None => continue,
                };
                let room = limit - kept;
                if data.len() > room {
                    out.truncated = true;
                }
                let take = data.len().min(room);
                buf.extend_from_slice(&data[..take]);
                kept += take;
            }
            Some(Event::End(end)) => {
                out.exit_code = end.exit_code;
                out.exited = end.exited;
                out.status = end.status;
                if let Some(e) = end.error.filter(|e| !e.is_empty()) {
                    out.status = format!("{}: {e}", out.status);
                }
                // Read the stream to its end (the guest closes it right after
                // `end`): dropping it early makes h2 reset the stream, and a
                // connection that sends too many such resets is closed by h2
                // (`too_many_internal_resets`), taking every PTY and stream
                // of the sandbox with it.
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                    while let Some(Ok(_)) = events.next().await {}
                })
                .await;
                return Ok(out);
            }
            Some(Event::Start(_)) | Some(Event::Keepalive(_)) | None => {}
        }
    }
}

pub async fn exec_stream(
    svc: &AgentService,
    req: pb::ExecRequest,
) -> Result<RelayStream<ProcessEvent>, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let start = check_start("start", req.start, false)?;
    let (pid, events) = start_process(&sb, &guest, start).await?;
    let done = CancellationToken::new();
    kill_after(guest, pid, req.timeout_secs, done.clone());
    let guard = done.drop_guard();
    let first = ProcessEvent {
        event: Some(Event::Start(pp::process_event::StartEvent { pid })),
    };
    let upstream = futures::stream::iter([Ok(StartResponse { event: Some(first) })]).chain(events);
    Ok(relay::relay(sb, upstream, move |r: StartResponse| {
        // Dropped with the relay: the timeout stops once the stream is over.
        let _ = &guard;
        r.event
    }))
}
