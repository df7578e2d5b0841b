//! Create, destroy, pause, resume and timeout: the calls that change a
//! sandbox's record.
//!
//! Each runs in its own task, so a caller that hangs up halfway does not leave
//! a record half-updated: the store and the host are brought to agreement
//! whether or not anyone is still waiting for the answer. The record is
//! written before the host is asked to create anything; when the host fails,
//! the record becomes `stopped` with the host's reason.

use std::future::Future;
use std::sync::Arc;

use tonic::{Code, Response, Status};
use wrenn_proto::wrenn::v1::{
    CreateSandboxRequest, DestroySandboxResponse, Sandbox, SandboxRef, SandboxSpec,
};
use wrenn_types::SandboxId;

use super::convert::{
    apply_live, live_from_agent, parse_id, to_proto, validate_spec, with_defaults,
    with_envd_access_token,
};
use super::{agent_error, host_of, load_live, load_record, place, store_error};
use crate::hosts::Host;
use crate::state::ControlState;
use crate::store::{RecordState, SandboxRecord, now_ms};

type AgentClient =
    wrenn_proto::wrenn::v1::host_agent_client::HostAgentClient<wrenn_proto::auth::AuthChannel>;

/// Runs `fut` in its own task (see the module docs).
async fn detached<T: Send + 'static>(
    fut: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(fut)
        .await
        .map_err(|e| Status::internal(format!("control plane task failed: {e}")))?
}

pub(crate) async fn create(
    state: Arc<ControlState>,
    req: CreateSandboxRequest,
) -> Result<Sandbox, Status> {
    if !req.sandbox_id.is_empty() {
        return Err(Status::invalid_argument(
            "sandbox_id: ids are chosen by the control plane; leave it empty",
        ));
    }
    let spec = req.spec.unwrap_or_default();
    validate_spec(&spec)?;
    detached(create_detached(state, spec)).await
}

async fn create_detached(state: Arc<ControlState>, spec: SandboxSpec) -> Result<Sandbox, Status> {
    let host = place(&state, &spec.template).await?;
    let id = SandboxId::generate();
    let _busy = state.busy.hold(&id);
    let now = now_ms();
    let record = SandboxRecord {
        id: id.clone(),
        host_id: host.id().to_owned(),
        state: RecordState::Starting,
        spec: with_defaults(&spec),
        metadata: spec
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        address: String::new(),
        generation: 0,
        backend: String::new(),
        created_at: now,
        expires_at: None,
        updated_at: now,
        stopped_at: None,
        stop_reason: String::new(),
    };
    state
        .store
        .insert_sandbox(&record)
        .await
        .map_err(store_error)?;
    tracing::info!(sandbox_id = %id, host_id = %host.id(), template = %record.spec.template, "creating sandbox");

    let agent_req = CreateSandboxRequest {
        sandbox_id: id.to_string(),
        spec: Some(spec),
    };
    let answer = tokio::time::timeout(
        state.lifecycle_timeout,
        host.client().create_sandbox(agent_req),
    )
    .await;
    let failure = match answer {
        Err(_) => Status::deadline_exceeded(format!(
            "host {} did not finish creating sandbox {id} within {}s",
            host.id(),
            state.lifecycle_timeout.as_secs()
        )),
        Ok(Err(status)) => agent_error(&host, status),
        Ok(Ok(resp)) => {
            let sb = resp.into_inner();
            match finish_create(&state, &host, record, &sb).await {
                Ok(created) => return Ok(created),
                Err(status) => status,
            }
        }
    };
    let reason = format!("create failed on host {}: {}", host.id(), failure.message());
    tracing::warn!(sandbox_id = %id, host_id = %host.id(), code = ?failure.code(), reason = %failure.message(), "create failed");
    if let Err(e) = state.store.mark_stopped(&id, &reason, now_ms()).await {
        tracing::error!(sandbox_id = %id, error = %crate::error::Chain(&e), "cannot mark the failed sandbox stopped; the reconciler will");
    }
    Err(failure)
}

/// Records what the host created. If the host answered with something
/// unusable or the store cannot take it, the sandbox is destroyed again so
/// that nothing runs without a record saying so.
async fn finish_create(
    state: &ControlState,
    host: &Host,
    record: SandboxRecord,
    sb: &Sandbox,
) -> Result<Sandbox, Status> {
    let id = record.id.clone();
    let problem = if sb.id != id.as_str() {
        Status::internal(format!(
            "host {} answered with sandbox id {:?} for {id}",
            host.id(),
            sb.id
        ))
    } else {
        let live = live_from_agent(sb);
        let at = now_ms();
        match state.store.update_live(&id, &live, at).await {
            Ok(_) => {
                tracing::info!(sandbox_id = %id, host_id = %host.id(), address = %live.address, "sandbox created");
                return Ok(with_envd_access_token(
                    to_proto(&apply_live(record, live, at)),
                    sb,
                ));
            }
            Err(e) => store_error(e),
        }
    };
    let mut client = host.client();
    let undo = client.destroy_sandbox(SandboxRef {
        sandbox_id: sb.id.clone(),
    });
    let undone = match tokio::time::timeout(state.lifecycle_timeout, undo).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(s.message().to_owned()),
        Err(_) => Err("timed out".to_owned()),
    };
    if let Err(error) = undone {
        tracing::error!(sandbox_id = %id, host_id = %host.id(), %error, "cannot destroy the sandbox after a failed create; the reconciler will");
    }
    Err(problem)
}

/// The record, with the envd access token its host reports when it is
/// live and its host answers within [`TOKEN_LOOKUP_TIMEOUT`] (the store
/// keeps no token; see [`envd_access_token`]).
pub(crate) async fn get(state: &ControlState, req: SandboxRef) -> Result<Sandbox, Status> {
    let id = parse_id("sandbox_id", &req.sandbox_id)?;
    let rec = load_record(state, &id).await?;
    let mut out = to_proto(&rec);
    if !rec.state.is_stopped() {
        match envd_access_token(state, &rec).await {
            Ok(Some(token)) => {
                if let Some(spec) = out.spec.as_mut() {
                    spec.envd_access_token = token;
                }
            }
            Ok(None) => {}
            Err(status) => {
                tracing::debug!(sandbox_id = %id, code = ?status.code(), message = status.message(), "no envd access token from the host");
            }
        }
    }
    Ok(out)
}

/// The record as the store has it, nothing asked of its host (so no envd
/// access token): for callers that only need its state.
pub(crate) async fn get_stored(state: &ControlState, req: SandboxRef) -> Result<Sandbox, Status> {
    let id = parse_id("sandbox_id", &req.sandbox_id)?;
    Ok(to_proto(&load_record(state, &id).await?))
}

/// Longest wait for a host's answer to [`envd_access_token`].
const TOKEN_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The envd access token the host of `rec` reports for it (its
/// `Sandbox.spec.envd_access_token`); `None` when the host reports none.
async fn envd_access_token(
    state: &ControlState,
    rec: &SandboxRecord,
) -> Result<Option<String>, Status> {
    let host = host_of(state, rec)?;
    let mut client = host.client();
    let call = client.get_sandbox(SandboxRef {
        sandbox_id: rec.id.to_string(),
    });
    let wait = TOKEN_LOOKUP_TIMEOUT.min(state.lifecycle_timeout);
    let sb = match tokio::time::timeout(wait, call).await {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "host {} did not answer for sandbox {} within {}s",
                host.id(),
                rec.id,
                wait.as_secs()
            )));
        }
        Ok(Err(s)) => return Err(agent_error(&host, s)),
        Ok(Ok(resp)) => resp.into_inner(),
    };
    Ok(sb
        .spec
        .map(|spec| spec.envd_access_token)
        .filter(|t| !t.is_empty()))
}

pub(crate) async fn destroy(
    state: Arc<ControlState>,
    req: SandboxRef,
) -> Result<DestroySandboxResponse, Status> {
    let id = parse_id("sandbox_id", &req.sandbox_id)?;
    detached(async move {
        let rec = load_record(&state, &id).await?;
        if rec.state.is_stopped() {
            return Ok(DestroySandboxResponse {});
        }
        let _busy = state.busy.hold(&id);
        let Some(host) = state.hosts.get(&rec.host_id) else {
            let reason = format!("host {} is no longer configured", rec.host_id);
            state
                .store
                .mark_stopped(&id, &reason, now_ms())
                .await
                .map_err(store_error)?;
            return Ok(DestroySandboxResponse {});
        };
        let mut client = host.client();
        let call = client.destroy_sandbox(SandboxRef {
            sandbox_id: id.to_string(),
        });
        let reason = match tokio::time::timeout(state.lifecycle_timeout, call).await {
            Ok(Ok(_)) => "destroyed by request".to_owned(),
            Ok(Err(s)) if s.code() == Code::NotFound => {
                format!(
                    "destroyed by request (already gone from host {})",
                    host.id()
                )
            }
            Ok(Err(s)) => return Err(agent_error(&host, s)),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "host {} did not finish destroying sandbox {id} within {}s",
                    host.id(),
                    state.lifecycle_timeout.as_secs()
                )));
            }
        };
        state
            .store
            .mark_stopped(&id, &reason, now_ms())
            .await
            .map_err(store_error)?;
        tracing::info!(sandbox_id = %id, host_id = %host.id(), "sandbox destroyed");
        Ok(DestroySandboxResponse {})
    })
    .await
}

/// Pause, resume or set-timeout: a call on the sandbox's host that answers
/// with the sandbox's new live state, which is then recorded (the answer
/// carries the host's envd access token).
pub(crate) async fn live_call<F, Fut>(
    state: Arc<ControlState>,
    sandbox_id: &str,
    what: &'static str,
    call: F,
) -> Result<Sandbox, Status>
where
    F: FnOnce(AgentClient, SandboxId) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Sandbox>, Status>> + Send,
{
    let id = parse_id("sandbox_id", sandbox_id)?;
    detached(async move {
        let rec = load_live(&state, &id).await?;
        let host = host_of(&state, &rec)?;
        let _busy = state.busy.hold(&id);
        let answer = tokio::time::timeout(state.lifecycle_timeout, call(host.client(), id.clone())).await;
        match answer {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what} sandbox {id}: host {} did not answer within {}s",
                host.id(),
                state.lifecycle_timeout.as_secs()
            ))),
            Ok(Err(s)) if s.code() == Code::NotFound => {
                let reason = format!("gone from host {} (found by {what})", host.id());
                state.store.mark_stopped(&id, &reason, now_ms()).await.map_err(store_error)?;
                Err(Status::not_found(format!(
                    "sandbox {id} no longer exists on host {}; its record is now stopped",
                    host.id()
                )))
            }
            Ok(Err(s)) => Err(agent_error(&host, s)),
            Ok(Ok(resp)) => {
                let sb = resp.into_inner();
                let live = live_from_agent(&sb);
                let at = now_ms();
                state.store.update_live(&id, &live, at).await.map_err(store_error)?;
                tracing::info!(sandbox_id = %id, host_id = %host.id(), op = what, state = %live.state, "sandbox updated");
                Ok(with_envd_access_token(to_proto(&apply_live(rec, live, at)), &sb))
            }
        }
    })
    .await
}
