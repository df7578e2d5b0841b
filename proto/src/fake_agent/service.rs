//! The `HostAgent` implementation: lifecycle and watch here; processes and
//! files delegate to [`super::process`] and [`super::files`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::state::{self, FakeState};
use super::{files, process};
use crate::filesystem as fs;
use crate::process as pp;
use crate::wrenn::v1::host_agent_server::HostAgent;
use crate::wrenn::v1::sandbox_event::Kind;
use crate::wrenn::v1::*;

pub(super) struct Fake {
    pub(super) state: Arc<FakeState>,
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
        self.state
            .take(&id, |_| {})
            .map(|_| Response::new(DestroySandboxResponse {}))
            .ok_or_else(|| state::not_found(&id))
    }

    async fn pause_sandbox(&self, r: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        let id = r.into_inner().sandbox_id;
        self.state.record(format!("pause {id}"));
        self.state
            .update(&id, Kind::Paused, |sb| {
                sb.state = SandboxState::Paused as i32;
            })
            .map(Response::new)
    }

    async fn resume_sandbox(&self, r: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        let id = r.into_inner().sandbox_id;
        self.state.record(format!("resume {id}"));
        self.state
            .update(&id, Kind::Resumed, |sb| {
                sb.state = SandboxState::Running as i32;
                sb.generation += 1;
            })
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

    async fn get_sandbox(&self, r: Request<SandboxRef>) -> Result<Response<Sandbox>, Status> {
        let id = r.into_inner().sandbox_id;
        self.state
            .with_sandbox(&id, |sb| sb.clone())
            .map(Response::new)
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

    type WatchSandboxesStream = UnboundedReceiverStream<Result<SandboxEvent, Status>>;

    /// The snapshot, SYNCED, then what `emit`, `publish` and the lifecycle
    /// calls send (see [`FakeState::watch`]).
    async fn watch_sandboxes(
        &self,
        _r: Request<WatchSandboxesRequest>,
    ) -> Result<Response<Self::WatchSandboxesStream>, Status> {
        Ok(Response::new(self.state.watch()))
    }

    type BuildTemplateStream = UnboundedReceiverStream<Result<BuildEvent, Status>>;

    /// The fake builds nothing.
    async fn build_template(
        &self,
        _r: Request<BuildTemplateRequest>,
    ) -> Result<Response<Self::BuildTemplateStream>, Status> {
        Err(Status::unimplemented("the fake agent builds no templates"))
    }

    async fn delete_template(
        &self,
        _r: Request<DeleteTemplateRequest>,
    ) -> Result<Response<DeleteTemplateResponse>, Status> {
        Ok(Response::new(DeleteTemplateResponse {}))
    }

    async fn exec(&self, r: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        process::exec(&self.state, r.into_inner()).map(Response::new)
    }

    type ExecStreamStream = process::Events;

    async fn exec_stream(
        &self,
        r: Request<ExecRequest>,
    ) -> Result<Response<process::Events>, Status> {
        process::exec_stream(&self.state, r.into_inner()).map(Response::new)
    }

    type PtyStream = process::PtyEvents;

    async fn pty(
        &self,
        r: Request<Streaming<PtyRequest>>,
    ) -> Result<Response<process::PtyEvents>, Status> {
        process::pty(&self.state, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_background(
        &self,
        r: Request<StartBackgroundRequest>,
    ) -> Result<Response<StartBackgroundResponse>, Status> {
        process::start_background(&self.state, r.into_inner()).map(Response::new)
    }

    async fn list_processes(
        &self,
        r: Request<SandboxRef>,
    ) -> Result<Response<pp::ListResponse>, Status> {
        process::list(&self.state, r.into_inner()).map(Response::new)
    }

    async fn kill_process(
        &self,
        r: Request<KillProcessRequest>,
    ) -> Result<Response<KillProcessResponse>, Status> {
        process::kill(&self.state, r.into_inner()).map(Response::new)
    }

    type ConnectProcessStream = process::Events;

    async fn connect_process(
        &self,
        r: Request<ConnectProcessRequest>,
    ) -> Result<Response<process::Events>, Status> {
        process::connect(&self.state, r.into_inner()).map(Response::new)
    }

    async fn send_input(
        &self,
        r: Request<SendInputRequest>,
    ) -> Result<Response<pp::SendInputResponse>, Status> {
        process::send_input(&self.state, r.into_inner()).map(Response::new)
    }

    type ReadFileStream = files::Chunks;

    async fn read_file(
        &self,
        r: Request<ReadFileRequest>,
    ) -> Result<Response<files::Chunks>, Status> {
        files::read(&self.state, r.into_inner()).map(Response::new)
    }

    async fn write_file(
        &self,
        r: Request<Streaming<WriteFileRequest>>,
    ) -> Result<Response<fs::WriteResponse>, Status> {
        files::write(&self.state, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn stat(&self, r: Request<PathRequest>) -> Result<Response<fs::StatResponse>, Status> {
        files::stat(&self.state, r.into_inner()).map(Response::new)
    }

    async fn list_dir(
        &self,
        r: Request<ListDirRequest>,
    ) -> Result<Response<fs::ListDirResponse>, Status> {
        files::list_dir(&self.state, r.into_inner()).map(Response::new)
    }

    async fn make_dir(
        &self,
        r: Request<PathRequest>,
    ) -> Result<Response<fs::MakeDirResponse>, Status> {
        files::make_dir(&self.state, r.into_inner()).map(Response::new)
    }

    async fn r#move(&self, r: Request<MoveRequest>) -> Result<Response<fs::MoveResponse>, Status> {
        files::rename(&self.state, r.into_inner()).map(Response::new)
    }

    async fn remove(
        &self,
        r: Request<PathRequest>,
    ) -> Result<Response<fs::RemoveResponse>, Status> {
        files::remove(&self.state, r.into_inner()).map(Response::new)
    }
}
