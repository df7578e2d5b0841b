//! CreateSandbox and ListSandboxes (the other lifecycle calls map one to one
//! onto [`Manager`] methods).

use std::sync::Arc;

use tonic::Status;
use tracing::warn;
use wrenn_proto::wrenn::v1 as pb;

use crate::manager::Manager;

pub async fn create(
    m: &Arc<Manager>,
    req: pb::CreateSandboxRequest,
) -> Result<pb::Sandbox, Status> {
    let requested = req.sandbox_id.clone();
    m.create(req).await.map_err(|e| {
        warn!(sandbox_id = %requested, error = %crate::error::chain(&e), "create failed");
        Status::from(e)
    })
}

/// Live sandboxes; with a metadata filter, only those whose metadata holds
/// every given pair. The agent has no stopped records: `include_stopped`
/// changes nothing.
pub fn list(m: &Manager, req: pb::ListSandboxesRequest) -> pb::ListSandboxesResponse {
    let sandboxes = m
        .list()
        .into_iter()
        .filter(|sb| {
            let meta = sb.spec.as_ref().map(|s| &s.metadata);
            req.metadata
                .iter()
                .all(|(k, v)| meta.and_then(|md| md.get(k)) == Some(v))
        })
        .collect();
    pb::ListSandboxesResponse { sandboxes }
}
