//! `wrenn.v1.Sandboxes`: lifecycle through the store, interactive calls
//! relayed to the sandbox's host agent.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wrenn_proto::filesystem;
use wrenn_proto::process;
use wrenn_proto::wrenn::v1::sandboxes_server::Sandboxes;
use wrenn_proto::wrenn::v1::{
    ConnectProcessRequest, CreateSandboxRequest, DestroySandboxResponse, ExecRequest, ExecResponse,
    KillProcessRequest, KillProcessResponse, ListDirRequest, ListSandboxesRequest,
    ListSandboxesResponse, MoveRequest, PathRequest, PtyRequest, PtyResponse, ReadFileRequest,
    Sandbox, SandboxMetrics, SandboxRef, SendInputRequest, SetTimeoutRequest,
    StartBackgroundRequest, StartBackgroundResponse, WriteFileRequest, pty_request,
    write_file_request,
};

use super::convert::{parse_id, to_proto, validate_metadata};
use super::relay::{AbortOnDrop, RELAY_CAPACITY, forward_requests, relay_response};
use super::upload::{self, relay_upload};
use super::{agent_error, host_of, lifecycle, load_live, store_error};
use crate::hosts::Host;
use crate::state::ControlState;
use crate::store::SandboxFilter;

/// The `Sandboxes` service.
#[derive(Debug, Clone)]
pub struct SandboxesService {
    state: Arc<ControlState>,
}

impl SandboxesService {
    pub fn new(state: Arc<ControlState>) -> Self {
        SandboxesService { state }
    }

    /// `Get` without asking the sandbox's host for its envd access token:
    /// the record as the store has it.
    pub(crate) async fn get_stored(&self, req: SandboxRef) -> Result<Sandbox, Status> {
        lifecycle::get_stored(&self.state, req).await
    }

    /// The host of live sandbox `sandbox_id` (request field `field`).
    async fn route(&self, field: &str, sandbox_id: &str) -> Result<Arc<Host>, Status> {
        let id = parse_id(field, sandbox_id)?;
        let rec = load_live(&self.state, &id).await?;
        host_of(&self.state, &rec)
    }
}

type Relayed<T> = ReceiverStream<Result<T, Status>>;

/// Relays an agent's response stream, naming the host in transport errors.
fn relay<T: Send + 'static, K: Send + 'static>(
    host: Arc<Host>,
    upstream: Streaming<T>,
    keep: K,
) -> Relayed<T> {
    let mapped = upstream.map(move |item| item.map_err(|s| agent_error(&host, s)));
    relay_response(mapped, keep)
}

/// Relays a unary call: route, call, map the agent's error, answer.
macro_rules! unary {
    ($self:ident, $req:ident, $method:ident) => {{
        let req = $req.into_inner();
        let host = $self.route("sandbox_id", &req.sandbox_id).await?;
        let answer = host.client().$method(req).await;
        answer
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| agent_error(&host, s))
    }};
}

#[tonic::async_trait]
impl Sandboxes for SandboxesService {
    async fn create(
        &self,
        request: Request<CreateSandboxRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        lifecycle::create(self.state.clone(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get(&self, request: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        lifecycle::get(&self.state, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list(
        &self,
        request: Request<ListSandboxesRequest>,
    ) -> Result<Response<ListSandboxesResponse>, Status> {
        let req = request.into_inner();
        validate_metadata("metadata", &req.metadata)?;
        let filter = SandboxFilter {
            metadata: req.metadata.into_iter().collect(),
            include_stopped: req.include_stopped,
            host_id: None,
        };
        let records = self
            .state
            .store
            .list_sandboxes(&filter)
            .await
            .map_err(store_error)?;
        Ok(Response::new(ListSandboxesResponse {
            sandboxes: records.iter().map(to_proto).collect(),
        }))
    }

    async fn destroy(
        &self,
        request: Request<SandboxRef>,
    ) -> Result<Response<DestroySandboxResponse>, Status> {
        lifecycle::destroy(self.state.clone(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn pause(&self, request: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        let req = request.into_inner();
        lifecycle::live_call(
            self.state.clone(),
            &req.sandbox_id,
            "pause",
            |mut c, id| async move {
                c.pause_sandbox(SandboxRef {
                    sandbox_id: id.to_string(),
                })
                .await
            },
        )
        .await
        .map(Response::new)
    }

    async fn resume(&self, request: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        let req = request.into_inner();
        lifecycle::live_call(
            self.state.clone(),
            &req.sandbox_id,
            "resume",
            |mut c, id| async move {
                c.resume_sandbox(SandboxRef {
                    sandbox_id: id.to_string(),
                })
                .await
            },
        )
        .await
        .map(Response::new)
    }

    async fn set_timeout(
        &self,
        request: Request<SetTimeoutRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        let req = request.into_inner();
        let secs = req.timeout_secs;
        lifecycle::live_call(
            self.state.clone(),
            &req.sandbox_id,
            "set timeout",
            move |mut c, id| async move {
                c.set_timeout(SetTimeoutRequest {
                    sandbox_id: id.to_string(),
                    timeout_secs: secs,
                })
                .await
            },
        )
        .await
        .map(Response::new)
    }

    async fn get_metrics(
        &self,
        request: Request<SandboxRef>,
    ) -> Result<Response<SandboxMetrics>, Status> {
        unary!(self, request, get_sandbox_metrics)
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        unary!(self, request, exec)
    }

    type ExecStreamStream = Relayed<process::ProcessEvent>;

    async fn exec_stream(
        &self,
        request: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        let req = request.into_inner();
        let host = self.route("sandbox_id", &req.sandbox_id).await?;
        let upstream = host
            .client()
            .exec_stream(req)
            .await
            .map_err(|s| agent_error(&host, s))?
            .into_inner();
        Ok(Response::new(relay(host, upstream, ())))
    }

    type PtyStream = Relayed<PtyResponse>;

    async fn pty(
        &self,
        request: Request<Streaming<PtyRequest>>,
    ) -> Result<Response<Self::PtyStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "pty: the stream ended before its first message (start or attach)",
            )
        })?;
        let host = match &first.event {
            Some(pty_request::Event::Start(s)) => {
                if s.start.is_none() {
                    return Err(Status::invalid_argument(
                        "start.start: missing (the command to run)",
                    ));
                }
                self.route("start.sandbox_id", &s.sandbox_id).await?
            }
            Some(pty_request::Event::Attach(a)) => {
                self.route("attach.sandbox_id", &a.sandbox_id).await?
            }
            _ => {
                return Err(Status::invalid_argument(
                    "pty: the first message must be start or attach",
                ));
            }
        };
        let (tx, rx) = mpsc::channel(RELAY_CAPACITY);
        tx.try_send(first)
            .map_err(|_| Status::internal("pty: cannot queue the first message"))?;
        let input = AbortOnDrop(tokio::spawn(async move {
            if let Err(status) = forward_requests(inbound, &tx).await {
                tracing::debug!(code = ?status.code(), message = status.message(), "pty input ended with an error");
            }
        }));
        let upstream = host
            .client()
            .pty(ReceiverStream::new(rx))
            .await
            .map_err(|s| agent_error(&host, s))?
            .into_inner();
        Ok(Response::new(relay(host, upstream, input)))
    }

    async fn start_background(
        &self,
        request: Request<StartBackgroundRequest>,
    ) -> Result<Response<StartBackgroundResponse>, Status> {
        unary!(self, request, start_background)
    }

    async fn list_processes(
        &self,
        request: Request<SandboxRef>,
    ) -> Result<Response<process::ListResponse>, Status> {
        unary!(self, request, list_processes)
    }

    async fn kill_process(
        &self,
        request: Request<KillProcessRequest>,
    ) -> Result<Response<KillProcessResponse>, Status> {
        unary!(self, request, kill_process)
    }

    type ConnectProcessStream = Relayed<process::ProcessEvent>;

    async fn connect_process(
        &self,
        request: Request<ConnectProcessRequest>,
    ) -> Result<Response<Self::ConnectProcessStream>, Status> {
        let req = request.into_inner();
        let host = self.route("sandbox_id", &req.sandbox_id).await?;
        let upstream = host
            .client()
            .connect_process(req)
            .await
            .map_err(|s| agent_error(&host, s))?
            .into_inner();
        Ok(Response::new(relay(host, upstream, ())))
    }

    async fn send_input(
        &self,
        request: Request<SendInputRequest>,
    ) -> Result<Response<process::SendInputResponse>, Status> {
        unary!(self, request, send_input)
    }

    type ReadFileStream = Relayed<filesystem::ReadResponse>;

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let req = request.into_inner();
        let host = self.route("sandbox_id", &req.sandbox_id).await?;
        let upstream = host
            .client()
            .read_file(req)
            .await
            .map_err(|s| agent_error(&host, s))?
            .into_inner();
        Ok(Response::new(relay(host, upstream, ())))
    }

    async fn write_file(
        &self,
        request: Request<Streaming<WriteFileRequest>>,
    ) -> Result<Response<filesystem::WriteResponse>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "write_file: the stream ended before its first message (start)",
            )
        })?;
        let host = match &first.event {
            Some(write_file_request::Event::Start(s)) => {
                if s.file.is_none() {
                    return Err(Status::invalid_argument(
                        "start.file: missing (path, mode, owner)",
                    ));
                }
                self.route("start.sandbox_id", &s.sandbox_id).await?
            }
            _ => {
                return Err(Status::invalid_argument(
                    "write_file: the first message must be start",
                ));
            }
        };
        let channel = host.channel();
        relay_upload(first, inbound, |upload| upload::write_file(channel, upload))
            .await
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| agent_error(&host, s))
    }

    async fn stat(
        &self,
        request: Request<PathRequest>,
    ) -> Result<Response<filesystem::StatResponse>, Status> {
        unary!(self, request, stat)
    }

    async fn list_dir(
        &self,
        request: Request<ListDirRequest>,
    ) -> Result<Response<filesystem::ListDirResponse>, Status> {
        unary!(self, request, list_dir)
    }

    async fn make_dir(
        &self,
        request: Request<PathRequest>,
    ) -> Result<Response<filesystem::MakeDirResponse>, Status> {
        unary!(self, request, make_dir)
    }

    async fn r#move(
        &self,
        request: Request<MoveRequest>,
    ) -> Result<Response<filesystem::MoveResponse>, Status> {
        unary!(self, request, r#move)
    }

    async fn remove(
        &self,
        request: Request<PathRequest>,
    ) -> Result<Response<filesystem::RemoveResponse>, Status> {
        unary!(self, request, remove)
    }
}
