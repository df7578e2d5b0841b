//! Files: Read and Write streams, Stat, ListDir, MakeDir, Move, Remove.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::debug;
use wrenn_proto::filesystem::{self as fs, write_request};
use wrenn_proto::wrenn::v1::{self as pb, write_file_request};

use super::relay::{self, RELAY_CAPACITY, RelayStream};
use super::{AgentService, guest_err, invalid};
use crate::guest::Guest;
use crate::manager::Sandbox;

/// How long the guest gets to acknowledge an aborted upload.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

fn path(field: &str, p: String) -> Result<String, Status> {
    if p.is_empty() {
        return Err(invalid(field, "empty path"));
    }
    if p.contains('\0') {
        return Err(invalid(field, "path contains a NUL byte"));
    }
    Ok(p)
}

pub async fn read(
    svc: &AgentService,
    req: pb::ReadFileRequest,
) -> Result<RelayStream<fs::ReadResponse>, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let path = path("path", req.path)?;
    let chunks = guest
        .filesystem()
        .read(fs::ReadRequest { path })
        .await
        .map_err(|s| guest_err(&sb, s))?
        .into_inner();
    Ok(relay::relay(sb, chunks, Some))
}

/// Metadata key by which a caller declares an upload's total size in bytes.
/// With it, an upload whose stream ends early is discarded instead of kept:
/// HTTP/2 servers built on hyper report a caller's cancel
/// (`RST_STREAM(CANCEL)`) as a clean end of the stream (hyperium/hyper#3681),
/// so without a declared size a cancelled upload cannot be told from a
/// complete one.
pub const UPLOAD_SIZE_HEADER: &str = "wrenn-upload-size";

/// Relays an upload. The guest renames its temporary file into place only
/// when the upload half-closes cleanly; if the caller's stream breaks (or
/// ends short of its declared size), the agent aborts the guest's upload
/// (see [`abort_upload`]) and the guest removes what it had. The relay runs
/// in its own task: when a caller's connection dies, hyper drops the handler,
/// and the abort must still happen.
pub async fn write(
    svc: &AgentService,
    req: tonic::Request<Streaming<pb::WriteFileRequest>>,
) -> Result<fs::WriteResponse, Status> {
    let declared = match req.metadata().get(UPLOAD_SIZE_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    invalid(UPLOAD_SIZE_HEADER, format!("{v:?} is not a size in bytes"))
                })?,
        ),
    };
    let mut inbound = req.into_inner();
    let start = match inbound.message().await?.and_then(|m| m.event) {
        Some(write_file_request::Event::Start(s)) => s,
        _ => return Err(invalid("event", "the first message must be start")),
    };
    let (sb, guest) = svc.running(&start.sandbox_id)?;
    let mut file = start.file.ok_or_else(|| invalid("start.file", "missing"))?;
    file.path = path("start.file.path", file.path)?;
    // The size may come in the start message (`start.file.size`) or as
    // metadata; the guest enforces it too, so it travels on.
    let declared = match (declared, file.size) {
        (Some(h), Some(f)) if h != f => {
            return Err(invalid(
                "start.file.size",
                format!("{f} disagrees with {UPLOAD_SIZE_HEADER} {h}"),
            ));
        }
        (h, f) => h.or(f),
    };
    file.size = declared;
    tokio::spawn(relay_upload(sb, guest, file, declared, inbound))
        .await
        .map_err(|e| Status::internal(format!("upload task failed: {e}")))?
}

async fn relay_upload(
    sb: Arc<Sandbox>,
    guest: Guest,
    file: fs::write_request::StartEvent,
    declared: Option<u64>,
    mut inbound: Streaming<pb::WriteFileRequest>,
) -> Result<fs::WriteResponse, Status> {
    let path = file.path.clone();
    let (tx, rx) = mpsc::channel(RELAY_CAPACITY);
    tx.try_send(fs::WriteRequest {
        event: Some(write_request::Event::Start(file)),
    })
    .expect("a new channel has room");
    let mut client = guest.filesystem();
    let call = client.write(ReceiverStream::new(rx));
    tokio::pin!(call);
    let finish = |r: Result<tonic::Response<fs::WriteResponse>, Status>| {
        r.map(|r| r.into_inner()).map_err(|s| guest_err(&sb, s))
    };
    let mut received = 0u64;
    // Every failure while the guest still expects data goes through here:
    // returning would drop `tx` first, which the guest takes as "commit".
    macro_rules! fail {
        ($tx:expr, $status:expr) => {{
            abort_upload($tx, call).await;
            return Err($status);
        }};
    }
    loop {
        let msg = tokio::select! {
            biased;
            // Kept sandboxes (agent shutdown) keep running: abort, not commit.
            _ = sb.cancel.cancelled() => fail!(tx, sb.ended_status()),
            r = &mut call => return finish(r),
            m = inbound.message() => m,
        };
        match msg {
            Ok(Some(pb::WriteFileRequest {
                event: Some(write_file_request::Event::Data(data)),
            })) => {
                received += data.len() as u64;
                if declared.is_some_and(|d| received > d) {
                    let d = declared.unwrap_or_default();
                    fail!(
                        tx,
                        invalid(
                            UPLOAD_SIZE_HEADER,
                            format!(
                                "upload of {path} is longer than the declared {d} bytes; nothing was written"
                            )
                        )
                    );
                }
                let chunk = fs::WriteRequest {
                    event: Some(write_request::Event::Data(data)),
                };
                tokio::select! {
                    biased;
                    _ = sb.cancel.cancelled() => fail!(tx, sb.ended_status()),
                    r = &mut call => return finish(r),
                    // A closed channel means the guest answered: the next
                    // turn of the loop returns its answer.
                    _ = tx.send(chunk) => {}
                }
            }
            Ok(Some(_)) => fail!(tx, invalid("event", "only data may follow start")),
            Ok(None) => {
                if let Some(d) = declared.filter(|&d| d != received) {
                    fail!(
                        tx,
                        Status::aborted(format!(
                            "upload of {path} ended after {received} of the declared {d} bytes; nothing was written"
                        ))
                    );
                }
                // Clean and complete: half-close towards the guest, which
                // commits and answers.
                drop(tx);
                return finish(call.await);
            }
            Err(s) => {
                debug!(sandbox_id = %sb.id, status = %s.message(), "upload broken by the caller; aborting the guest's");
                fail!(tx, s);
            }
        }
    }
}

/// Makes the guest drop an upload without committing it.
///
/// Resetting the guest's stream is not enough: hyper's server reports a
/// `RST_STREAM(CANCEL)` from the client as a clean end of the request body
/// (hyperium/hyper#3681), which the guest would take as "commit". A second
/// `start` message is a protocol error the guest answers by discarding the
/// temporary file, so that is what the agent sends.
async fn abort_upload(
    tx: mpsc::Sender<fs::WriteRequest>,
    call: impl std::future::Future<Output = Result<tonic::Response<fs::WriteResponse>, Status>>,
) {
    let poison = fs::WriteRequest {
        event: Some(write_request::Event::Start(
            fs::write_request::StartEvent::default(),
        )),
    };
    let abort = async {
        match tx.send(poison).await {
            Ok(()) => {
                let r = call.await;
                debug!(answer = ?r.as_ref().map(|_| ()), "guest answered the upload abort");
            }
            Err(_) => debug!("guest upload stream already closed"),
        }
    };
    if tokio::time::timeout(ABORT_TIMEOUT, abort).await.is_err() {
        debug!("guest did not answer the upload abort in time");
    }
}

pub async fn stat(svc: &AgentService, req: pb::PathRequest) -> Result<fs::StatResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let path = path("path", req.path)?;
    guest
        .filesystem()
        .stat(fs::StatRequest { path })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| guest_err(&sb, s))
}

pub async fn list_dir(
    svc: &AgentService,
    req: pb::ListDirRequest,
) -> Result<fs::ListDirResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let path = path("path", req.path)?;
    guest
        .filesystem()
        .list_dir(fs::ListDirRequest {
            path,
            depth: req.depth,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| guest_err(&sb, s))
}

pub async fn make_dir(
    svc: &AgentService,
    req: pb::PathRequest,
) -> Result<fs::MakeDirResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let path = path("path", req.path)?;
    guest
        .filesystem()
        .make_dir(fs::MakeDirRequest { path })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| guest_err(&sb, s))
}

pub async fn rename(svc: &AgentService, req: pb::MoveRequest) -> Result<fs::MoveResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let source = path("source", req.source)?;
    let destination = path("destination", req.destination)?;
    guest
        .filesystem()
        .r#move(fs::MoveRequest {
            source,
            destination,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| guest_err(&sb, s))
}

pub async fn remove(
    svc: &AgentService,
    req: pb::PathRequest,
) -> Result<fs::RemoveResponse, Status> {
    let (sb, guest) = svc.running(&req.sandbox_id)?;
    let path = path("path", req.path)?;
    guest
        .filesystem()
        .remove(fs::RemoveRequest { path })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| guest_err(&sb, s))
}
