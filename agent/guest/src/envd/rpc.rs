//! Connect calls to the agent's own services: the request decoded, the
//! user and relative paths applied, the same trait method gRPC calls
//! invoked, the answer encoded.

use futures::Stream;
use http::Response;
use tonic::body::Body;
use tonic::{Request, Status};
use wrenn_proto::filesystem::filesystem_server::Filesystem as _;
use wrenn_proto::filesystem::{
    CreateWatcherRequest, ListDirRequest, MakeDirRequest, MoveRequest, ReadRequest, RemoveRequest,
    StatRequest, WatchDirRequest, WriteRequest, write_request,
};
use wrenn_proto::process::process_server::Process as _;
use wrenn_proto::process::{
    CloseStdinRequest, ConnectRequest, ListRequest, SendInputRequest, SendSignalRequest,
    StartRequest, StreamInputRequest, UpdateRequest,
};

use super::connect::{Call, client_stream, server_stream, unary};
use super::{Envd, in_home};

/// envd forgets a process when it ends: E2B's SDKs take `not_found` for
/// "no such process" (`kill` then answers false). wrenn keeps an ended
/// process a while for `Connect` and says `failed_precondition`; the
/// Connect interface says what envd says.
fn ended_is_gone(status: Status) -> Status {
    if status.code() == tonic::Code::FailedPrecondition
        && status.message().contains("has already ended")
    {
        Status::not_found(status.message().to_owned())
    } else {
        status
    }
}

type Requests<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `call` (its token already checked) as `user` (from the
/// Authorization header, if any).
pub async fn dispatch(envd: &Envd, call: Call, user: Option<String>, body: Body) -> Response<Body> {
    let p = &envd.0.process;
    let fs = &envd.0.fs;
    let user = user.as_deref();
    // The user is looked up only for a relative path.
    let home = |path: &mut String| -> Result<(), Status> {
        if !path.starts_with('/') {
            *path = in_home(path, &*envd.user(user)?);
        }
        Ok(())
    };
    match call.method.full_name() {
        "process.Process.Start" => {
            server_stream(call, body, |mut r: StartRequest| async move {
                r.user = envd.process_user(user);
                Ok(p.start(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "process.Process.Connect" => {
            server_stream(call, body, |r: ConnectRequest| async move {
                Ok(p.connect(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "process.Process.List" => {
            unary(call, body, |r: ListRequest| async move {
                Ok(p.list(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "process.Process.Update" => {
            unary(call, body, |r: UpdateRequest| async move {
                Ok(p.update(Request::new(r))
                    .await
                    .map_err(ended_is_gone)?
                    .into_inner())
            })
            .await
        }
        "process.Process.SendInput" => {
            unary(call, body, |r: SendInputRequest| async move {
                Ok(p.send_input(Request::new(r))
                    .await
                    .map_err(ended_is_gone)?
                    .into_inner())
            })
            .await
        }
        "process.Process.SendSignal" => {
            unary(call, body, |r: SendSignalRequest| async move {
                Ok(p.send_signal(Request::new(r))
                    .await
                    .map_err(ended_is_gone)?
                    .into_inner())
            })
            .await
        }
        "process.Process.CloseStdin" => {
            unary(call, body, |r: CloseStdinRequest| async move {
                Ok(p.close_stdin(Request::new(r))
                    .await
                    .map_err(ended_is_gone)?
                    .into_inner())
            })
            .await
        }
        "process.Process.StreamInput" => {
            client_stream(call, body, |r: Requests<StreamInputRequest>| async move {
                p.stream_input_from(r).await
            })
            .await
        }
        "filesystem.Filesystem.Stat" => {
            unary(call, body, |mut r: StatRequest| async move {
                home(&mut r.path)?;
                Ok(fs.stat(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.MakeDir" => {
            unary(call, body, |mut r: MakeDirRequest| async move {
                let owner = envd.user(user)?;
                r.path = in_home(&r.path, &owner);
                fs.make_dir_owned(r, owner).await
            })
            .await
        }
        "filesystem.Filesystem.Move" => {
            unary(call, body, |mut r: MoveRequest| async move {
                home(&mut r.source)?;
                home(&mut r.destination)?;
                Ok(fs.r#move(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.ListDir" => {
            unary(call, body, |mut r: ListDirRequest| async move {
                home(&mut r.path)?;
                Ok(fs.list_dir(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.Remove" => {
            unary(call, body, |mut r: RemoveRequest| async move {
                home(&mut r.path)?;
                Ok(fs.remove(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.WatchDir" => {
            server_stream(call, body, |mut r: WatchDirRequest| async move {
                home(&mut r.path)?;
                Ok(fs.watch_dir(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.CreateWatcher" => {
            unary(call, body, |mut r: CreateWatcherRequest| async move {
                home(&mut r.path)?;
                Ok(fs.create_watcher(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.GetWatcherEvents" => {
            unary(call, body, |r| async move {
                Ok(fs.get_watcher_events(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.RemoveWatcher" => {
            unary(call, body, |r| async move {
                Ok(fs.remove_watcher(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.Read" => {
            server_stream(call, body, |mut r: ReadRequest| async move {
                home(&mut r.path)?;
                Ok(fs.read(Request::new(r)).await?.into_inner())
            })
            .await
        }
        "filesystem.Filesystem.Write" => {
            client_stream(call, body, |r: Requests<WriteRequest>| async move {
                let owner = envd.user(user)?;
                let requests = futures::StreamExt::map(r, move |m| {
                    let mut m = m?;
                    if let Some(write_request::Event::Start(start)) = &mut m.event {
                        start.path = in_home(&start.path, &owner);
                        if start.owner.as_deref().is_none_or(str::is_empty) {
                            start.owner = Some(owner.name.clone());
                        }
                    }
                    Ok(m)
                });
                let entry = crate::fs::write_file(Box::pin(requests), fs.users().clone()).await?;
                Ok(wrenn_proto::filesystem::WriteResponse { entry: Some(entry) })
            })
            .await
        }
        other => super::connect::error_response(&Status::unimplemented(format!(
            "{other} is not served here"
        ))),
    }
}
