//! Background processes: start, list, connect, input, kill.

use tonic::Status;
use wrenn_proto::process::{
    self as pp, ConnectRequest, ConnectResponse, ListRequest, ProcessEvent, Signal,
};
use wrenn_proto::wrenn::v1 as pb;

use super::exec::{check_start, start_process};
use super::relay::{self, RelayStream};
use super::{AgentService, guest_err, invalid, selector};

/// Starts a process and returns its pid once it runs. The guest keeps the
/// process running (and reads its output) after this call lets go of its
/// start stream; ConnectProcess attaches to its output later.
pub async fn start_background(
    svc: &AgentService,
    req: pb::StartBackgroundRequest,
) -> Result<pb::StartBackgroundResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let start = req.start.ok_or_else(|| invalid("start", "missing"))?;
    let pty = start.pty.is_some();
    let start = check_start("start", Some(start), pty)?;
    let (pid, _events) = start_process(&sb, &guest, start).await?;
    Ok(pb::StartBackgroundResponse { pid })
}

pub async fn list(svc: &AgentService, req: pb::SandboxRef) -> Result<pp::ListResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    guest
        .process()
        .list(ListRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| guest_err(&sb, s))
}

pub async fn kill(
    svc: &AgentService,
    req: pb::KillProcessRequest,
) -> Result<pb::KillProcessResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let process = selector("process", req.process)?;
    let signal = match req.signal {
        0 => Signal::Sigkill,
        n => Signal::try_from(n)
            .map_err(|_| invalid("signal", format!("{n} is not a known signal")))?,
    };
    guest
        .process()
        .send_signal(pp::SendSignalRequest {
            process: Some(process),
            signal: signal as i32,
        })
        .await
        .map_err(|s| guest_err(&sb, s))?;
    Ok(pb::KillProcessResponse {})
}

pub async fn connect(
    svc: &AgentService,
    req: pb::ConnectProcessRequest,
) -> Result<RelayStream<ProcessEvent>, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let process = selector("process", req.process)?;
    let events = guest
        .process()
        .connect(ConnectRequest {
            process: Some(process),
        })
        .await
        .map_err(|s| guest_err(&sb, s))?
        .into_inner();
    Ok(relay::relay(sb, events, |r: ConnectResponse| r.event))
}

pub async fn send_input(
    svc: &AgentService,
    req: pb::SendInputRequest,
) -> Result<pp::SendInputResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let mut input = req.input.ok_or_else(|| invalid("input", "missing"))?;
    input.process = Some(selector("input.process", input.process)?);
    if input
        .input
        .as_ref()
        .and_then(|i| i.input.as_ref())
        .is_none()
    {
        return Err(invalid("input.input", "stdin or pty bytes required"));
    }
    guest
        .process()
        .send_input(input)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| guest_err(&sb, s))
}
