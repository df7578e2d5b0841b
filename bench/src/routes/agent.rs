//! A stand-in host agent for the `routes` scenario: a real tonic
//! `HostAgent` server on loopback whose `WatchSandboxes` reports one real
//! sandbox plus as many listed-only sandboxes as the scenario asks for,
//! through the same snapshot-then-events protocol the real agent speaks.
//! Every other method answers `unimplemented`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wrenn_proto::filesystem as fs;
use wrenn_proto::process as pp;
use wrenn_proto::wrenn::v1::host_agent_server::{HostAgent, HostAgentServer};
use wrenn_proto::wrenn::v1::sandbox_event::Kind;
use wrenn_proto::wrenn::v1::*;

#[derive(Default)]
struct State {
    sandboxes: Mutex<BTreeMap<String, Sandbox>>,
    events: Mutex<Option<broadcast::Sender<SandboxEvent>>>,
}

/// The stand-in agent; dropping it stops the server.
pub struct FakeAgent {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeAgent {
    pub async fn start() -> anyhow::Result<FakeAgent> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(1 << 16);
        let state = Arc::new(State {
            events: Mutex::new(Some(events)),
            ..Default::default()
        });
        let svc = Service {
            state: state.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(HostAgentServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Ok(FakeAgent {
            addr,
            state,
            stop: Some(stop),
        })
    }

    /// Adds (or replaces) a sandbox and tells watchers.
    pub fn upsert(&self, sb: Sandbox) {
        let mut map = self.state.sandboxes.lock();
        map.insert(sb.id.clone(), sb.clone());
        self.emit(Kind::Running, sb);
    }

    /// Removes a sandbox and tells watchers.
    pub fn remove(&self, id: &str) {
        let mut map = self.state.sandboxes.lock();
        if let Some(sb) = map.remove(id) {
            self.emit(Kind::Destroyed, sb);
        }
    }

    pub fn len(&self) -> usize {
        self.state.sandboxes.lock().len()
    }

    fn emit(&self, kind: Kind, sb: Sandbox) {
        if let Some(tx) = self.state.events.lock().as_ref() {
            let _ = tx.send(SandboxEvent {
                kind: kind as i32,
                sandbox: Some(sb),
            });
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        // Ends the watch streams, then the server.
        self.state.events.lock().take();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Service {
    state: Arc<State>,
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

fn no<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "the bench's stand-in agent only serves WatchSandboxes",
    ))
}

#[tonic::async_trait]
impl HostAgent for Service {
    type WatchSandboxesStream = ReceiverStream<Result<SandboxEvent, Status>>;

    async fn watch_sandboxes(
        &self,
        _req: Request<WatchSandboxesRequest>,
    ) -> Result<Response<Self::WatchSandboxesStream>, Status> {
        // Snapshot and subscription under one lock: no event falls in between.
        let (snapshot, mut live) = {
            let map = self.state.sandboxes.lock();
            let events = self.state.events.lock();
            let Some(tx) = events.as_ref() else {
                return Err(Status::unavailable("stopping"));
            };
            (map.values().cloned().collect::<Vec<_>>(), tx.subscribe())
        };
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            for sb in snapshot {
                let e = SandboxEvent {
                    kind: Kind::Existing as i32,
                    sandbox: Some(sb),
                };
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let synced = SandboxEvent {
                kind: Kind::Synced as i32,
                sandbox: None,
            };
            if tx.send(Ok(synced)).await.is_err() {
                return;
            }
            while let Ok(e) = live.recv().await {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn create_sandbox(
        &self,
        _: Request<CreateSandboxRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        no()
    }
    async fn destroy_sandbox(
        &self,
        _: Request<SandboxRef>,
    ) -> Result<Response<DestroySandboxResponse>, Status> {
        no()
    }
    async fn pause_sandbox(&self, _: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        no()
    }
    async fn resume_sandbox(&self, _: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        no()
    }
    async fn set_timeout(
        &self,
        _: Request<SetTimeoutRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        no()
    }
    async fn list_sandboxes(
        &self,
        _: Request<ListSandboxesRequest>,
    ) -> Result<Response<ListSandboxesResponse>, Status> {
        no()
    }
    async fn get_sandbox_metrics(
        &self,
        _: Request<SandboxRef>,
    ) -> Result<Response<SandboxMetrics>, Status> {
        no()
    }
    async fn exec(&self, _: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        no()
    }
    type ExecStreamStream = Stream<pp::ProcessEvent>;
    async fn exec_stream(
        &self,
        _: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        no()
    }
    type PtyStream = Stream<PtyResponse>;
    async fn pty(
        &self,
        _: Request<Streaming<PtyRequest>>,
    ) -> Result<Response<Self::PtyStream>, Status> {
        no()
    }
    async fn start_background(
        &self,
        _: Request<StartBackgroundRequest>,
    ) -> Result<Response<StartBackgroundResponse>, Status> {
        no()
    }
    async fn list_processes(
        &self,
        _: Request<SandboxRef>,
    ) -> Result<Response<pp::ListResponse>, Status> {
        no()
    }
    async fn kill_process(
        &self,
        _: Request<KillProcessRequest>,
    ) -> Result<Response<KillProcessResponse>, Status> {
        no()
    }
    type ConnectProcessStream = Stream<pp::ProcessEvent>;
    async fn connect_process(
        &self,
        _: Request<ConnectProcessRequest>,
    ) -> Result<Response<Self::ConnectProcessStream>, Status> {
        no()
    }
    async fn send_input(
        &self,
        _: Request<SendInputRequest>,
    ) -> Result<Response<pp::SendInputResponse>, Status> {
        no()
    }
    type ReadFileStream = Stream<fs::ReadResponse>;
    async fn read_file(
        &self,
        _: Request<ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        no()
    }
    async fn write_file(
        &self,
        _: Request<Streaming<WriteFileRequest>>,
    ) -> Result<Response<fs::WriteResponse>, Status> {
        no()
    }
    async fn stat(&self, _: Request<PathRequest>) -> Result<Response<fs::StatResponse>, Status> {
        no()
    }
    async fn list_dir(
        &self,
        _: Request<ListDirRequest>,
    ) -> Result<Response<fs::ListDirResponse>, Status> {
        no()
    }
    async fn make_dir(
        &self,
        _: Request<PathRequest>,
    ) -> Result<Response<fs::MakeDirResponse>, Status> {
        no()
    }
    async fn r#move(&self, _: Request<MoveRequest>) -> Result<Response<fs::MoveResponse>, Status> {
        no()
    }
    async fn remove(
        &self,
        _: Request<PathRequest>,
    ) -> Result<Response<fs::RemoveResponse>, Status> {
        no()
    }
}
