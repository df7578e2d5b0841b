//! The tonic `wrenn.v1.HostAgent` service: lifecycle calls go to the
//! [`Manager`]; interactive calls are relayed to the sandbox's guest agent
//! over the sandbox's own channel.
//!
//! PTY sessions are one bidirectional stream (`Pty`): the first message starts
//! a process on a pseudo-terminal or attaches to one, later messages carry
//! input, resizes and signals, and the response stream carries the process's
//! events. One stream keeps a terminal's input and output on one HTTP/2
//! stream with one lifetime, so nothing has to match separate calls up.

pub(crate) mod exec;
mod files;
mod lifecycle;
mod process;
mod pty;
pub mod relay;
mod watch;

use std::sync::Arc;

use tonic::{Code, Request, Response, Status, Streaming};
use wrenn_proto::filesystem as fs;
use wrenn_proto::process as pp;
use wrenn_proto::wrenn::v1::{self as pb, host_agent_server::HostAgent};

use crate::error::SandboxError;
use crate::manager::{Manager, Sandbox};
pub use files::UPLOAD_SIZE_HEADER;
use relay::RelayStream;

/// The `HostAgent` gRPC service over a [`Manager`].
#[derive(Debug, Clone)]
pub struct AgentService {
    m: Arc<Manager>,
    builder: Arc<crate::build::Builder>,
}

impl AgentService {
    pub fn new(m: Arc<Manager>) -> Self {
        let builder = crate::build::Builder::new(m.clone());
        AgentService { m, builder }
    }

    /// The sandbox `raw` names and its guest, if it runs.
    fn running(&self, raw: &str) -> Result<(Arc<Sandbox>, crate::guest::Guest), Status> {
        let sb = self.m.get(raw)?;
        let guest = sb.running_guest()?.clone();
        Ok((sb, guest))
    }
}

/// A guest's error as the caller sees it: the guest's own status, except a
/// transport failure, which names the sandbox and the guest's address.
pub(crate) fn guest_err(sb: &Sandbox, s: Status) -> Status {
    if sb.cancel.is_cancelled() {
        return sb.ended_status();
    }
    match s.code() {
        Code::Unavailable | Code::Unknown if std::error::Error::source(&s).is_some() => {
            Status::unavailable(format!(
                "sandbox {}: guest agent at {} unreachable: {}",
                sb.id,
                sb.guest.addr(),
                crate::guest::status_text(&s)
            ))
        }
        _ => s,
    }
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Status {
    SandboxError::invalid(field, reason).into()
}

/// A process selector that names a pid or a tag.
pub(crate) fn selector(
    field: &str,
    sel: Option<pp::ProcessSelector>,
) -> Result<pp::ProcessSelector, Status> {
    match sel {
        Some(s @ pp::ProcessSelector { selector: Some(_) }) => Ok(s),
        _ => Err(invalid(field, "a pid or a tag is required")),
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl HostAgent for AgentService {
    async fn create_sandbox(&self, req: Request<pb::CreateSandboxRequest>) -> R<pb::Sandbox> {
        lifecycle::create(&self.m, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn destroy_sandbox(&self, req: Request<pb::SandboxRef>) -> R<pb::DestroySandboxResponse> {
        self.m
            .destroy(&req.into_inner().sandbox_id, "destroyed by request")
            .await?;
        Ok(Response::new(pb::DestroySandboxResponse {}))
    }

    async fn pause_sandbox(&self, req: Request<pb::SandboxRef>) -> R<pb::Sandbox> {
        Ok(Response::new(
            self.m.pause(&req.into_inner().sandbox_id).await?,
        ))
    }

    async fn resume_sandbox(&self, req: Request<pb::SandboxRef>) -> R<pb::Sandbox> {
        Ok(Response::new(
            self.m.resume(&req.into_inner().sandbox_id).await?,
        ))
    }

    async fn set_timeout(&self, req: Request<pb::SetTimeoutRequest>) -> R<pb::Sandbox> {
        let r = req.into_inner();
        Ok(Response::new(
            self.m.set_timeout(&r.sandbox_id, r.timeout_secs)?,
        ))
    }

    async fn list_sandboxes(
        &self,
        req: Request<pb::ListSandboxesRequest>,
    ) -> R<pb::ListSandboxesResponse> {
        Ok(Response::new(lifecycle::list(&self.m, req.into_inner())))
    }

    async fn get_sandbox(&self, req: Request<pb::SandboxRef>) -> R<pb::Sandbox> {
        let sb = self.m.get(&req.into_inner().sandbox_id)?;
        Ok(Response::new(self.m.record(&sb)))
    }

    async fn get_sandbox_metrics(&self, req: Request<pb::SandboxRef>) -> R<pb::SandboxMetrics> {
        Ok(Response::new(
            self.m.metrics(&req.into_inner().sandbox_id).await?,
        ))
    }

    type BuildTemplateStream = crate::build::Events;

    async fn build_template(
        &self,
        req: Request<pb::BuildTemplateRequest>,
    ) -> R<Self::BuildTemplateStream> {
        self.builder.build(req.into_inner()).map(Response::new)
    }

    async fn delete_template(
        &self,
        req: Request<pb::DeleteTemplateRequest>,
    ) -> R<pb::DeleteTemplateResponse> {
        self.builder.delete(&req.into_inner().name)?;
        Ok(Response::new(pb::DeleteTemplateResponse {}))
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> R<pb::ExecResponse> {
        exec::exec(self, req.into_inner()).await.map(Response::new)
    }

    type ExecStreamStream = RelayStream<pp::ProcessEvent>;

    async fn exec_stream(&self, req: Request<pb::ExecRequest>) -> R<Self::ExecStreamStream> {
        exec::exec_stream(self, req.into_inner())
            .await
            .map(Response::new)
    }

    type PtyStream = RelayStream<pb::PtyResponse>;

    async fn pty(&self, req: Request<Streaming<pb::PtyRequest>>) -> R<Self::PtyStream> {
        pty::pty(self, req.into_inner()).await.map(Response::new)
    }

    async fn start_background(
        &self,
        req: Request<pb::StartBackgroundRequest>,
    ) -> R<pb::StartBackgroundResponse> {
        process::start_background(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_processes(&self, req: Request<pb::SandboxRef>) -> R<pp::ListResponse> {
        process::list(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kill_process(
        &self,
        req: Request<pb::KillProcessRequest>,
    ) -> R<pb::KillProcessResponse> {
        process::kill(self, req.into_inner())
            .await
            .map(Response::new)
    }

    type ConnectProcessStream = RelayStream<pp::ProcessEvent>;

    async fn connect_process(
        &self,
        req: Request<pb::ConnectProcessRequest>,
    ) -> R<Self::ConnectProcessStream> {
        process::connect(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn send_input(&self, req: Request<pb::SendInputRequest>) -> R<pp::SendInputResponse> {
        process::send_input(self, req.into_inner())
            .await
            .map(Response::new)
    }

    type ReadFileStream = RelayStream<fs::ReadResponse>;

    async fn read_file(&self, req: Request<pb::ReadFileRequest>) -> R<Self::ReadFileStream> {
        files::read(self, req.into_inner()).await.map(Response::new)
    }

    async fn write_file(
        &self,
        req: Request<Streaming<pb::WriteFileRequest>>,
    ) -> R<fs::WriteResponse> {
        files::write(self, req).await.map(Response::new)
    }

    async fn stat(&self, req: Request<pb::PathRequest>) -> R<fs::StatResponse> {
        files::stat(self, req.into_inner()).await.map(Response::new)
    }

    async fn list_dir(&self, req: Request<pb::ListDirRequest>) -> R<fs::ListDirResponse> {
        files::list_dir(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn make_dir(&self, req: Request<pb::PathRequest>) -> R<fs::MakeDirResponse> {
        files::make_dir(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn r#move(&self, req: Request<pb::MoveRequest>) -> R<fs::MoveResponse> {
        files::rename(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove(&self, req: Request<pb::PathRequest>) -> R<fs::RemoveResponse> {
        files::remove(self, req.into_inner())
            .await
            .map(Response::new)
    }

    type WatchSandboxesStream = RelayStream<pb::SandboxEvent>;

    async fn watch_sandboxes(
        &self,
        _req: Request<pb::WatchSandboxesRequest>,
    ) -> R<Self::WatchSandboxesStream> {
        Ok(Response::new(watch::watch(&self.m)))
    }
}
