//! A fake `HostAgent` tonic server on an ephemeral loopback port: keeps
//! sandboxes in a map, records every call, and serves the interactive calls
//! the relay tests need (exec output, a PTY echo, a large file produced on
//! demand, uploads that remember whether they ended cleanly).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use wrenn_proto::filesystem::{self, EntryInfo};
use wrenn_proto::process::{self, ProcessEvent, process_event};
use wrenn_proto::wrenn::v1::host_agent_server::{HostAgent, HostAgentServer};
use wrenn_proto::wrenn::v1::*;

/// Size of each chunk of `/big`.
pub const CHUNK: usize = 32 * 1024;
/// Chunks in `/big` (about 94 MiB, never held in memory at once).
pub const BIG_CHUNKS: u64 = 3000;
/// Address the fake reports for sandboxes: inside the control suite's slot
/// range (3000-3999), never contacted.
pub const SANDBOX_ADDRESS: &str = "10.210.23.113";

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Clean half-close: the file would be renamed into place.
    Committed {
        path: String,
        bytes: u64,
        in_order: bool,
    },
    /// The stream broke: nothing may be written.
    Aborted {
        path: String,
        bytes: u64,
        code: tonic::Code,
    },
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub calls: Mutex<Vec<String>>,
    pub sandboxes: Mutex<BTreeMap<String, Sandbox>>,
    /// Returned by the next CreateSandbox instead of creating.
    pub fail_create: Mutex<Option<Status>>,
    /// Chunks of `/big` handed to the transport so far.
    pub produced: AtomicU64,
    pub writes: Mutex<Vec<WriteOutcome>>,
    /// Data bytes received by uploads in progress.
    pub write_progress: AtomicU64,
    /// Open WatchSandboxes streams.
    watchers: Mutex<Vec<mpsc::Sender<Result<SandboxEvent, Status>>>>,
    generation: AtomicU64,
}

impl FakeState {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().push(call);
    }

    /// Puts a sandbox straight into the map (as if made behind the control
    /// plane's back).
    pub fn insert(&self, id: &str, metadata: &[(&str, &str)]) -> Sandbox {
        let sb = self.new_sandbox(
            id,
            SandboxSpec {
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                timeout_secs: 300,
                ..Default::default()
            },
        );
        self.sandboxes.lock().insert(id.to_owned(), sb.clone());
        sb
    }

    fn new_sandbox(&self, id: &str, spec: SandboxSpec) -> Sandbox {
        let now = SystemTime::now();
        let timeout = if spec.timeout_secs == 0 {
            300
        } else {
            spec.timeout_secs
        };
        Sandbox {
            id: id.to_owned(),
            state: SandboxState::Running as i32,
            spec: Some(spec),
            address: SANDBOX_ADDRESS.to_owned(),
            generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
            backend: "namespace".to_owned(),
            host_id: String::new(),
            created_at: Some(now.into()),
            expires_at: Some((now + Duration::from_secs(timeout.into())).into()),
            stop_reason: String::new(),
            netns: String::new(),
            unhealthy: String::new(),
        }
    }

    /// Sends a lifecycle event to every watcher.
    pub fn publish(&self, kind: sandbox_event::Kind, sb: Sandbox) {
        let ev = SandboxEvent {
            kind: kind as i32,
            sandbox: Some(sb),
        };
        self.watchers
            .lock()
            .retain(|w| w.try_send(Ok(ev.clone())).is_ok());
    }

    /// The host's TTL reaper at work: `id` ran out its timeout and is gone.
    pub fn expire(&self, id: &str) {
        let sb = self.sandboxes.lock().remove(id);
        if let Some(mut sb) = sb {
            sb.expires_at = Some((SystemTime::now() - Duration::from_secs(1)).into());
            self.publish(sandbox_event::Kind::Destroyed, sb);
        }
    }

    pub fn watchers(&self) -> usize {
        self.watchers.lock().len()
    }

    fn with_sandbox<T>(&self, id: &str, f: impl FnOnce(&mut Sandbox) -> T) -> Result<T, Status> {
        let mut map = self.sandboxes.lock();
        let sb = map
            .get_mut(id)
            .ok_or_else(|| Status::not_found(format!("sandbox {id} not found")))?;
        Ok(f(sb))
    }

    fn exists(&self, id: &str) -> Result<(), Status> {
        self.with_sandbox(id, |_| ())
    }
}

/// The running fake.
pub struct FakeAgent {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeAgent {
    pub async fn start() -> FakeAgent {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            Arc::default(),
        )
        .await
    }

    /// Serves `state` on `listener` (used to restart on the same port).
    pub async fn start_on(listener: TcpListener, state: Arc<FakeState>) -> FakeAgent {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = HostAgentServer::new(Fake {
            state: state.clone(),
        });
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeAgent {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(&mut self) {
        // Open watch streams would hold their connections open through a
        // graceful shutdown.
        self.state.watchers.lock().clear();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(mut t) = self.task.take() {
            // Graceful: open connections get GOAWAY and close, so the agent
            // is really gone, not just no longer accepting.
            if tokio::time::timeout(Duration::from_secs(10), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct Fake {
    state: Arc<FakeState>,
}

/// An upload in progress; recorded as aborted unless marked done.
struct Upload {
    state: Arc<FakeState>,
    path: String,
    bytes: u64,
    code: tonic::Code,
    done: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let path = std::mem::take(&mut self.path);
            self.state.writes.lock().push(WriteOutcome::Aborted {
                path,
                bytes: self.bytes,
                code: self.code,
            });
        }
    }
}

/// Records its call when dropped (the end of a session, however it ended).
struct Recorder(Arc<FakeState>, String);

impl Drop for Recorder {
    fn drop(&mut self) {
        let call = std::mem::take(&mut self.1);
        self.0.record(call);
    }
}

type Events = ReceiverStream<Result<ProcessEvent, Status>>;

fn event(e: process_event::Event) -> ProcessEvent {
    ProcessEvent { event: Some(e) }
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

fn entry(path: &str, size: i64) -> EntryInfo {
    EntryInfo {
        name: path.rsplit('/').next().unwrap_or_default().to_owned(),
        r#type: filesystem::FileType::File as i32,
        path: path.to_owned(),
        size,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl HostAgent for Fake {
    async fn create_sandbox(
        &self,
        r: Request<CreateSandboxRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        let r = r.into_inner();
        self.state.record(format!("create {}", r.sandbox_id));
        if let Some(status) = self.state.fail_create.lock().take() {
            return Err(status);
        }
        let sb = self
            .state
            .new_sandbox(&r.sandbox_id, r.spec.unwrap_or_default());
        self.state.sandboxes.lock().insert(r.sandbox_id, sb.clone());
        Ok(Response::new(sb))
    }

    async fn destroy_sandbox(
        &self,
        r: Request<SandboxRef>,
    ) -> Result<Response<DestroySandboxResponse>, Status> {
        let id = r.into_inner().sandbox_id;
        self.state.record(format!("destroy {id}"));
        let removed = self.state.sandboxes.lock().remove(&id);
        match removed {
            Some(sb) => {
                self.state.publish(sandbox_event::Kind::Destroyed, sb);
                Ok(Response::new(DestroySandboxResponse {}))
            }
            None => Err(Status::not_found(format!("sandbox {id} not found"))),
        }
    }

    async fn pause_sandbox(&self, r: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        let id = r.into_inner().sandbox_id;
        self.state.record(format!("pause {id}"));
        self.state
            .with_sandbox(&id, |sb| {
                sb.state = SandboxState::Paused as i32;
                sb.clone()
            })
            .inspect(|sb| self.state.publish(sandbox_event::Kind::Paused, sb.clone()))
            .map(Response::new)
    }

    async fn resume_sandbox(&self, r: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        let id = r.into_inner().sandbox_id;
        self.state.record(format!("resume {id}"));
        self.state
            .with_sandbox(&id, |sb| {
                sb.state = SandboxState::Running as i32;
                sb.generation += 1;
                sb.clone()
            })
            .inspect(|sb| self.state.publish(sandbox_event::Kind::Resumed, sb.clone()))
            .map(Response::new)
    }

    async fn set_timeout(
        &self,
        r: Request<SetTimeoutRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        let r = r.into_inner();
        self.state
            .record(format!("timeout {} {}", r.sandbox_id, r.timeout_secs));
        self.state
            .with_sandbox(&r.sandbox_id, |sb| {
                let t = SystemTime::now() + Duration::from_secs(r.timeout_secs.into());
                sb.expires_at = Some(t.into());
                sb.clone()
            })
            .map(Response::new)
    }

    async fn list_sandboxes(
        &self,
        _r: Request<ListSandboxesRequest>,
    ) -> Result<Response<ListSandboxesResponse>, Status> {
        self.state.record("list".into());
        let sandboxes = self.state.sandboxes.lock().values().cloned().collect();
        Ok(Response::new(ListSandboxesResponse { sandboxes }))
    }

    async fn get_sandbox_metrics(
        &self,
        r: Request<SandboxRef>,
    ) -> Result<Response<SandboxMetrics>, Status> {
        let id = r.into_inner().sandbox_id;
        self.state.exists(&id)?;
        Ok(Response::new(SandboxMetrics {
            sandbox_id: id,
            pids: 3,
            memory_bytes: 1 << 20,
            ..Default::default()
        }))
    }

    /// `cmd args…` echoed on stdout, `stderr` on stderr; `exit N` exits N.
    async fn exec(&self, r: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        let p = r
            .start
            .and_then(|s| s.process)
            .ok_or_else(|| Status::invalid_argument("start.process: missing"))?;
        self.state
            .record(format!("exec {} {}", r.sandbox_id, p.cmd));
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
        Ok(Response::new(ExecResponse {
            stdout: line.into_bytes(),
            stderr: b"stderr\n".to_vec(),
            exit_code,
            exited: true,
            status: format!("exit status {exit_code}"),
            truncated: false,
            pid: 42,
        }))
    }

    type ExecStreamStream = Events;

    /// start, `args[0]` (default 3) numbered stdout lines, end.
    async fn exec_stream(&self, r: Request<ExecRequest>) -> Result<Response<Events>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        let n: u32 = r
            .start
            .and_then(|s| s.process)
            .and_then(|p| p.args.first().and_then(|a| a.parse().ok()))
            .unwrap_or(3);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(event(process_event::Event::Start(
                    process_event::StartEvent { pid: 42 },
                ))))
                .await;
            for i in 0..n {
                let out =
                    process_event::data_event::Output::Stdout(format!("line {i}\n").into_bytes());
                let ev = event(process_event::Event::Data(process_event::DataEvent {
                    output: Some(out),
                }));
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(end(0, true, "exit status 0"))).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type PtyStream = ReceiverStream<Result<PtyResponse, Status>>;

    /// Echoes input; reports resizes as text; a signal ends the session.
    async fn pty(
        &self,
        r: Request<Streaming<PtyRequest>>,
    ) -> Result<Response<Self::PtyStream>, Status> {
        let mut inbound = r.into_inner();
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
        self.state.exists(&id)?;
        self.state.record(format!("pty {id}"));
        let (tx, rx) = mpsc::channel(16);
        let state = self.state.clone();
        tokio::spawn(async move {
            let _closed = Recorder(state, format!("pty closed {id}"));
            let send = |e: ProcessEvent| {
                let tx = tx.clone();
                async move { tx.send(Ok(PtyResponse { event: Some(e) })).await.is_ok() }
            };
            send(event(process_event::Event::Start(
                process_event::StartEvent { pid: 7 },
            )))
            .await;
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
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn start_background(
        &self,
        r: Request<StartBackgroundRequest>,
    ) -> Result<Response<StartBackgroundResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        self.state.record(format!("background {}", r.sandbox_id));
        Ok(Response::new(StartBackgroundResponse { pid: 100 }))
    }

    async fn list_processes(
        &self,
        r: Request<SandboxRef>,
    ) -> Result<Response<process::ListResponse>, Status> {
        self.state.exists(&r.into_inner().sandbox_id)?;
        let p = process::ProcessInfo {
            pid: 100,
            tag: Some("srv".into()),
            config: None,
        };
        Ok(Response::new(process::ListResponse { processes: vec![p] }))
    }

    async fn kill_process(
        &self,
        r: Request<KillProcessRequest>,
    ) -> Result<Response<KillProcessResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        self.state.record(format!(
            "kill {} {:?}",
            r.sandbox_id,
            r.process.and_then(|p| p.selector)
        ));
        Ok(Response::new(KillProcessResponse {}))
    }

    type ConnectProcessStream = Events;

    async fn connect_process(
        &self,
        r: Request<ConnectProcessRequest>,
    ) -> Result<Response<Events>, Status> {
        self.state.exists(&r.into_inner().sandbox_id)?;
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(event(process_event::Event::Start(
            process_event::StartEvent { pid: 100 },
        ))))
        .await
        .ok();
        tx.send(Ok(end(0, true, "exit status 0"))).await.ok();
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn send_input(
        &self,
        r: Request<SendInputRequest>,
    ) -> Result<Response<process::SendInputResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        self.state.record(format!("input {}", r.sandbox_id));
        Ok(Response::new(process::SendInputResponse {}))
    }

    type ReadFileStream = ReceiverStream<Result<filesystem::ReadResponse, Status>>;

    /// `/big`: BIG_CHUNKS chunks made on demand, each starting with its index;
    /// `/broken`: three chunks, then an error.
    async fn read_file(
        &self,
        r: Request<ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        let (chunks, fail) = match r.path.as_str() {
            "/big" => (BIG_CHUNKS, false),
            "/broken" => (3, true),
            other => return Err(Status::not_found(format!("{other}: no such file"))),
        };
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            for i in 0..chunks {
                let mut buf = vec![(i % 251) as u8; CHUNK];
                buf[..8].copy_from_slice(&i.to_be_bytes());
                if tx
                    .send(Ok(filesystem::ReadResponse { data: buf }))
                    .await
                    .is_err()
                {
                    return;
                }
                state.produced.fetch_add(1, Ordering::SeqCst);
            }
            if fail {
                let _ = tx.send(Err(Status::data_loss("disk read failed"))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    /// Counts bytes; data chunks start with their index (big-endian u64) so
    /// order can be checked. Like the real agent: a clean end of the
    /// stream commits at once (tonic reports a caller's CANCEL reset that way
    /// too, so only the caller can prevent that), an error aborts.
    async fn write_file(
        &self,
        r: Request<Streaming<WriteFileRequest>>,
    ) -> Result<Response<filesystem::WriteResponse>, Status> {
        let mut inbound = r.into_inner();
        let path = match inbound.message().await? {
            Some(WriteFileRequest {
                event: Some(write_file_request::Event::Start(s)),
            }) => {
                self.state.exists(&s.sandbox_id)?;
                s.file.map(|f| f.path).unwrap_or_default()
            }
            _ => return Err(Status::invalid_argument("first message must be start")),
        };
        let mut upload = Upload {
            state: self.state.clone(),
            path,
            bytes: 0,
            code: tonic::Code::Cancelled,
            done: false,
        };
        let (mut next, mut in_order) = (0u64, true);
        loop {
            match inbound.message().await {
                Ok(Some(WriteFileRequest {
                    event: Some(write_file_request::Event::Data(d)),
                })) => {
                    if d.len() >= 8 {
                        let idx = u64::from_be_bytes(d[..8].try_into().unwrap());
                        in_order &= idx == next;
                        next += 1;
                    }
                    upload.bytes += d.len() as u64;
                    self.state
                        .write_progress
                        .fetch_add(d.len() as u64, Ordering::SeqCst);
                }
                Ok(Some(_)) => return Err(Status::invalid_argument("start sent twice")),
                Ok(None) => break,
                Err(status) => {
                    upload.code = status.code();
                    return Err(status);
                }
            }
        }
        upload.done = true;
        let (path, bytes) = (upload.path.clone(), upload.bytes);
        self.state.writes.lock().push(WriteOutcome::Committed {
            path: path.clone(),
            bytes,
            in_order,
        });
        Ok(Response::new(filesystem::WriteResponse {
            entry: Some(entry(&path, bytes as i64)),
        }))
    }

    async fn stat(
        &self,
        r: Request<PathRequest>,
    ) -> Result<Response<filesystem::StatResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        Ok(Response::new(filesystem::StatResponse {
            entry: Some(entry(&r.path, 5)),
        }))
    }

    async fn list_dir(
        &self,
        r: Request<ListDirRequest>,
    ) -> Result<Response<filesystem::ListDirResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        let entries = vec![
            entry(&format!("{}/a", r.path), 1),
            entry(&format!("{}/b", r.path), 2),
        ];
        Ok(Response::new(filesystem::ListDirResponse { entries }))
    }

    async fn make_dir(
        &self,
        r: Request<PathRequest>,
    ) -> Result<Response<filesystem::MakeDirResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        self.state.record(format!("mkdir {}", r.path));
        Ok(Response::new(filesystem::MakeDirResponse {
            entry: Some(entry(&r.path, 0)),
        }))
    }

    async fn r#move(
        &self,
        r: Request<MoveRequest>,
    ) -> Result<Response<filesystem::MoveResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        self.state
            .record(format!("move {} {}", r.source, r.destination));
        Ok(Response::new(filesystem::MoveResponse {
            entry: Some(entry(&r.destination, 0)),
        }))
    }

    async fn remove(
        &self,
        r: Request<PathRequest>,
    ) -> Result<Response<filesystem::RemoveResponse>, Status> {
        let r = r.into_inner();
        self.state.exists(&r.sandbox_id)?;
        self.state.record(format!("remove {}", r.path));
        Ok(Response::new(filesystem::RemoveResponse {}))
    }

    type WatchSandboxesStream = ReceiverStream<Result<SandboxEvent, Status>>;

    async fn watch_sandboxes(
        &self,
        _r: Request<WatchSandboxesRequest>,
    ) -> Result<Response<Self::WatchSandboxesStream>, Status> {
        // The snapshot, SYNCED, then what `publish` sends.
        let (tx, rx) = mpsc::channel(1024);
        let mut watchers = self.state.watchers.lock();
        for sb in self.state.sandboxes.lock().values() {
            let ev = SandboxEvent {
                kind: sandbox_event::Kind::Existing as i32,
                sandbox: Some(sb.clone()),
            };
            let _ = tx.try_send(Ok(ev));
        }
        let synced = SandboxEvent {
            kind: sandbox_event::Kind::Synced as i32,
            sandbox: None,
        };
        let _ = tx.try_send(Ok(synced));
        watchers.push(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
