//! The `process.Process` gRPC service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use wrenn_proto::process::process_event::{Event, KeepAlive};
use wrenn_proto::process::process_server::Process;
use wrenn_proto::process::stream_input_request::Event as InputEvent;
use wrenn_proto::process::{
    CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
    ListResponse, ProcessEvent, SendInputRequest, SendInputResponse, SendSignalRequest,
    SendSignalResponse, StartRequest, StartResponse, StreamInputRequest, StreamInputResponse,
    UpdateRequest, UpdateResponse,
};

use super::handle::ProcError;
use super::pty::WindowSize;
use super::request::SpawnSpec;
use super::table::ProcessTable;
use crate::env::BaseEnv;
use crate::stream::with_keepalive;
use crate::template::Template;
use crate::users::UserDb;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `process.Process`.
#[derive(Debug, Clone)]
pub struct ProcessService {
    table: Arc<ProcessTable>,
    users: Arc<UserDb>,
    env: Arc<BaseEnv>,
    /// User and working directory of requests that name none.
    defaults: Arc<Template>,
    keepalive: Duration,
}

impl ProcessService {
    pub fn new(
        table: Arc<ProcessTable>,
        users: Arc<UserDb>,
        env: Arc<BaseEnv>,
        defaults: Arc<Template>,
        keepalive: Duration,
    ) -> Self {
        Self {
            table,
            users,
            env,
            defaults,
            keepalive,
        }
    }
}

fn keepalive_event() -> ProcessEvent {
    ProcessEvent {
        event: Some(Event::Keepalive(KeepAlive {})),
    }
}

/// `end` is the last event of a process stream.
fn is_end(event: &ProcessEvent) -> bool {
    matches!(event.event, Some(Event::End(_)))
}

#[tonic::async_trait]
impl Process for ProcessService {
    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let processes = self.table.running().iter().map(|p| p.info()).collect();
        Ok(Response::new(ListResponse { processes }))
    }

    type ConnectStream = EventStream<ConnectResponse>;

    async fn connect(
        &self,
        request: Request<ConnectRequest>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let proc = self.table.get(request.get_ref().process.as_ref())?;
        let events = proc.subscribe();
        let wrap = |event| ConnectResponse { event: Some(event) };
        let keepalive = || ConnectResponse {
            event: Some(keepalive_event()),
        };
        Ok(Response::new(Box::pin(with_keepalive(
            events,
            self.keepalive,
            is_end,
            wrap,
            keepalive,
        ))))
    }

    type StartStream = EventStream<StartResponse>;

    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<Self::StartStream>, Status> {
        let req = request.into_inner();
        let spec = SpawnSpec::from_request(&req, &self.users, &self.env, &self.defaults)?;
        let config = req.process.unwrap_or_default();
        let (_proc, events) = self.table.start(&spec, config, req.tag)?;
        let wrap = |event| StartResponse { event: Some(event) };
        let keepalive = || StartResponse {
            event: Some(keepalive_event()),
        };
        Ok(Response::new(Box::pin(with_keepalive(
            events,
            self.keepalive,
            is_end,
            wrap,
            keepalive,
        ))))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let req = request.into_inner();
        let proc = self.table.get(req.process.as_ref())?;
        let size = req
            .pty
            .and_then(|p| p.size)
            .ok_or_else(|| Status::invalid_argument("pty.size is required"))?;
        let size = WindowSize::new(size.cols, size.rows).map_err(ProcError::from)?;
        proc.resize(size)?;
        Ok(Response::new(UpdateResponse {}))
    }

    async fn stream_input(
        &self,
        request: Request<Streaming<StreamInputRequest>>,
    ) -> Result<Response<StreamInputResponse>, Status> {
        self.stream_input_from(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn send_input(
        &self,
        request: Request<SendInputRequest>,
    ) -> Result<Response<SendInputResponse>, Status> {
        let req = request.into_inner();
        let proc = self.table.get(req.process.as_ref())?;
        proc.write_input(req.input).await?;
        Ok(Response::new(SendInputResponse {}))
    }

    async fn send_signal(
        &self,
        request: Request<SendSignalRequest>,
    ) -> Result<Response<SendSignalResponse>, Status> {
        let req = request.into_inner();
        let proc = self.table.get(req.process.as_ref())?;
        proc.signal(req.signal)?;
        Ok(Response::new(SendSignalResponse {}))
    }

    async fn close_stdin(
        &self,
        request: Request<CloseStdinRequest>,
    ) -> Result<Response<CloseStdinResponse>, Status> {
        let proc = self.table.get(request.get_ref().process.as_ref())?;
        proc.close_stdin().await?;
        Ok(Response::new(CloseStdinResponse {}))
    }
}

impl ProcessService {
    /// `StreamInput` from any stream of its messages (gRPC's, or Connect's
    /// envelopes).
    pub async fn stream_input_from(
        &self,
        mut stream: impl Stream<Item = Result<StreamInputRequest, Status>> + Unpin,
    ) -> Result<StreamInputResponse, Status> {
        let first = stream.next().await.transpose()?.and_then(|m| m.event);
        let Some(InputEvent::Start(start)) = first else {
            return Err(Status::invalid_argument(
                "the first StreamInput message must be `start`",
            ));
        };
        let proc = self.table.get(start.process.as_ref())?;
        while let Some(message) = stream.next().await.transpose()? {
            match message.event {
                Some(InputEvent::Data(data)) => proc.write_input(data.input).await?,
                Some(InputEvent::Keepalive(_)) | None => {}
                Some(InputEvent::Start(_)) => {
                    return Err(Status::invalid_argument(
                        "`start` may only be the first StreamInput message",
                    ));
                }
            }
        }
        Ok(StreamInputResponse {})
    }
}
