//! The public gRPC services: `wrenn.v1.Sandboxes`, `wrenn.v1.Templates`,
//! `wrenn.v1.Hosts` and `wrenn.v1.Keys`.
//!
//! Lifecycle calls (`lifecycle.rs`) go through the store; interactive calls
//! (`sandboxes.rs`) are looked up in the store and relayed to the sandbox's
//! host agent over the control plane's own channel to that host
//! (`relay.rs`).

pub(crate) mod convert;
mod hosts;
mod keys;
mod lifecycle;
pub(crate) mod relay;
mod sandboxes;
mod templates;
mod upload;

use std::sync::Arc;

use tonic::Status;
use wrenn_types::SandboxId;

use crate::hosts::Host;
use crate::state::ControlState;
use crate::store::{SandboxRecord, StoreError};

pub use hosts::HostsService;
pub use keys::{KeysService, MAX_KEY_NAME};
pub use relay::RELAY_CAPACITY;
pub use sandboxes::SandboxesService;
pub use templates::TemplatesService;

/// A store failure as the caller sees it (and logged with its cause chain).
pub(crate) fn store_error(e: StoreError) -> Status {
    let chain = crate::error::Chain(&e).to_string();
    tracing::error!(error = %chain, "store failure");
    Status::internal(format!("the control plane's store failed: {chain}"))
}

/// An agent's answer as the caller sees it: the agent's own status, except
/// that a failure to reach the agent names the host and marks it unreachable.
///
/// A status the agent sent never has a source; one made by our own channel
/// (connection refused, reset, GOAWAY while the agent shuts down) always
/// does, whatever its code.
pub(crate) fn agent_error(host: &Host, status: Status) -> Status {
    if std::error::Error::source(&status).is_none() {
        return status;
    }
    // The root cause ("Connection refused (os error 111)"): the layers above
    // it (tonic's Status and transport errors) repeat each other.
    let mut root: &(dyn std::error::Error + 'static) = &status;
    while let Some(next) = root.source() {
        root = next;
    }
    let detail = root.to_string();
    host.mark_unreachable(detail.clone());
    Status::unavailable(format!(
        "host {} (agent {}) is unreachable: {detail}",
        host.id(),
        host.config().agent_address
    ))
}

/// Where a sandbox of `template` (or a build of it) goes: the host that
/// built the template if it has a record, else the only host, else the
/// host with the fewest live sandboxes.
pub(crate) async fn place(state: &ControlState, template: &str) -> Result<Arc<Host>, Status> {
    if !template.is_empty()
        && let Some(rec) = state
            .store
            .get_template(template)
            .await
            .map_err(store_error)?
        && let Some(h) = state.hosts.get(&rec.host_id)
    {
        return Ok(h);
    }
    if let Some(h) = state.hosts.only() {
        return Ok(h);
    }
    let load = state
        .store
        .count_live_by_host()
        .await
        .map_err(store_error)?;
    Ok(state.hosts.choose(&load))
}

/// The record of `id`, stopped or not; `NOT_FOUND` when there is none.
pub(crate) async fn load_record(
    state: &ControlState,
    id: &SandboxId,
) -> Result<SandboxRecord, Status> {
    state
        .store
        .get_sandbox(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| Status::not_found(format!("sandbox {id} not found")))
}

/// The record of `id`, which must not be stopped.
pub(crate) async fn load_live(
    state: &ControlState,
    id: &SandboxId,
) -> Result<SandboxRecord, Status> {
    let rec = load_record(state, id).await?;
    if rec.state.is_stopped() {
        return Err(Status::failed_precondition(format!(
            "sandbox {id} is stopped: {}",
            rec.stop_reason
        )));
    }
    Ok(rec)
}

/// The host a record lives on.
pub(crate) fn host_of(state: &ControlState, rec: &SandboxRecord) -> Result<Arc<Host>, Status> {
    state.hosts.get(&rec.host_id).ok_or_else(|| {
        Status::failed_precondition(format!(
            "sandbox {} is on host {}, which is not configured",
            rec.id, rec.host_id
        ))
    })
}
