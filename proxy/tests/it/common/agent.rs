//! A fake host agent: a real tonic `HostAgent` server on an ephemeral loopback
//! port whose `WatchSandboxes` serves a snapshot of its sandbox map, then the
//! events the test emits. Every other method answers `unimplemented`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};
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
    watch_calls: AtomicUsize,
    /// Every new watch stream breaks before its snapshot is complete.
    break_snapshots: AtomicBool,
}

/// The fake agent; dropping it stops the server.
pub struct FakeAgent {
    pub addr: SocketAddr,
    state: Arc<State>,
    kill_streams: watch::Sender<u64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A sandbox as the agent reports it.
pub fn sandbox(id: &str, address: &str, state: SandboxState, generation: u64) -> Sandbox {
    Sandbox {
        id: id.into(),
        state: state as i32,
        address: address.into(),
        generation,
        backend: "namespace".into(),
        ..Default::default()
    }
}

impl FakeAgent {
    pub async fn start() -> FakeAgent {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub async fn start_on(listener: tokio::net::TcpListener) -> FakeAgent {
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(1024);
        let state = Arc::new(State {
            events: Mutex::new(Some(events)),
            ..Default::default()
        });
        let (kill_streams, _) = watch::channel(0);
        let svc = Service {
            state: state.clone(),
            kill: kill_streams.subscribe(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(HostAgentServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        FakeAgent {
            addr,
            state,
            kill_streams,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Records `sb` and sends a live event of `kind` for it.
    pub fn emit(&self, kind: Kind, sb: Sandbox) {
        let mut map = self.state.sandboxes.lock();
        if kind == Kind::Destroyed {
            map.remove(&sb.id);
        } else {
            map.insert(sb.id.clone(), sb.clone());
        }
        if let Some(tx) = self.state.events.lock().as_ref() {
            let _ = tx.send(SandboxEvent {
                kind: kind as i32,
                sandbox: Some(sb),
            });
        }
    }

    /// Changes the map without an event (as if it happened while the proxy was disconnected).
    pub fn set_quietly(&self, sb: Sandbox) {
        self.state.sandboxes.lock().insert(sb.id.clone(), sb);
    }

    pub fn remove_quietly(&self, id: &str) {
        self.state.sandboxes.lock().remove(id);
    }

    /// Ends every open watch stream (the proxy must reconnect and resync).
    pub fn drop_streams(&self) {
        self.kill_streams.send_modify(|n| *n += 1);
    }

    /// While `on`, every watch stream sends the snapshot's sandboxes, then
    /// breaks instead of sending `KIND_SYNCED` (the proxy cannot resync).
    pub fn break_snapshots(&self, on: bool) {
        self.state.break_snapshots.store(on, Ordering::SeqCst);
    }

    pub fn watch_calls(&self) -> usize {
        self.state.watch_calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.drop_streams();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Service {
    state: Arc<State>,
    kill: watch::Receiver<u64>,
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

fn no<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "the fake agent only serves WatchSandboxes",
    ))
}

#[tonic::async_trait]
impl HostAgent for Service {
    type WatchSandboxesStream = ReceiverStream<Result<SandboxEvent, Status>>;

    async fn watch_sandboxes(
        &self,
        _req: Request<WatchSandboxesRequest>,
    ) -> Result<Response<Self::WatchSandboxesStream>, Status> {
        self.state.watch_calls.fetch_add(1, Ordering::SeqCst);
        // Snapshot and subscription under one lock: no event falls in between.
        let (snapshot, mut live) = {
            let map = self.state.sandboxes.lock();
            let events = self.state.events.lock();
            let live = events.as_ref().expect("agent running").subscribe();
            (map.values().cloned().collect::<Vec<_>>(), live)
        };
        let mut kill = self.kill.clone();
        kill.mark_unchanged();
        let broken = self.state.break_snapshots.load(Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(64);
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
            if broken {
                let _ = tx
                    .send(Err(Status::unavailable("fake agent broke the snapshot")))
                    .await;
                return;
            }
            let synced = SandboxEvent {
                kind: Kind::Synced as i32,
                sandbox: None,
            };
            if tx.send(Ok(synced)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = kill.changed() => {
                        let _ = tx.send(Err(Status::unavailable("fake agent dropped the stream"))).await;
                        return;
                    }
                    e = live.recv() => match e {
                        Ok(e) => if tx.send(Ok(e)).await.is_err() { return },
                        Err(_) => return,
                    },
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
