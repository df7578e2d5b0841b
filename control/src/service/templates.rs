//! `wrenn.v1.Templates`: builds run on a host agent and streamed through;
//! the record written when a build succeeds; list, get and delete from the
//! store (delete refused while sandboxes use the template, naming them).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wrenn_proto::wrenn::v1::templates_server::Templates;
use wrenn_proto::wrenn::v1::{
    BuildEvent, BuildTemplateRequest, DeleteTemplateRequest, DeleteTemplateResponse,
    ListTemplatesRequest, ListTemplatesResponse, Template, TemplateDefaults, TemplateRef,
    build_event::Event,
};

use super::{agent_error, store_error};
use crate::hosts::Host;
use crate::state::ControlState;
use crate::store::{StoreError, TemplateDefaults as StoredDefaults, TemplateRecord};

/// Build events waiting for a slow caller before the build waits too.
const BUILD_BUFFER: usize = 256;

/// The `Templates` service.
#[derive(Debug, Clone)]
pub struct TemplatesService {
    state: Arc<ControlState>,
}

impl TemplatesService {
    pub fn new(state: Arc<ControlState>) -> Self {
        TemplatesService { state }
    }
}

fn check_name(name: &str) -> Result<(), Status> {
    if wrenn_types::spec::is_template_name(name) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "name: {name:?} is not a template name: expected 1-64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

fn to_proto(r: TemplateRecord, with_log: bool) -> Template {
    let ts = |t: DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    };
    Template {
        name: r.name,
        size_bytes: r.size_bytes,
        recipe_digest: r.recipe_digest,
        defaults: Some(TemplateDefaults {
            user: r.defaults.user,
            workdir: r.defaults.workdir,
            env: r.defaults.env.into_iter().collect(),
            start: r.defaults.start,
            ready: r.defaults.ready,
            ready_timeout_ms: 0,
        }),
        created_at: Some(ts(r.created_at)),
        updated_at: Some(ts(r.updated_at)),
        host_id: r.host_id,
        build_log: if with_log { r.build_log } else { String::new() },
        ..Default::default()
    }
}

/// The record of a template a host just built.
fn record(t: &Template, host: &Host) -> TemplateRecord {
    let d = t.defaults.clone().unwrap_or_default();
    let now = Utc::now();
    TemplateRecord {
        name: t.name.clone(),
        host_id: host.id().to_owned(),
        size_bytes: t.size_bytes,
        recipe_digest: t.recipe_digest.clone(),
        defaults: StoredDefaults {
            user: d.user,
            workdir: d.workdir,
            env: d.env.into_iter().collect(),
            start: d.start,
            ready: d.ready,
        },
        build_log: t.build_log.clone(),
        created_at: now,
        updated_at: now,
    }
}

#[tonic::async_trait]
impl Templates for TemplatesService {
    type BuildStream = ReceiverStream<Result<BuildEvent, Status>>;

    /// Relays the host's build. The caller going away drops the host's
    /// stream, which cancels the build there.
    async fn build(
        &self,
        request: Request<BuildTemplateRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let req = request.into_inner();
        check_name(&req.name)?;
        let host = super::place(&self.state, &req.name).await?;
        let name = req.name.clone();
        let mut upstream = host
            .client()
            .build_template(req)
            .await
            .map_err(|s| agent_error(&host, s))?
            .into_inner();
        let (tx, rx) = mpsc::channel(BUILD_BUFFER);
        let state = self.state.clone();
        tracing::info!(template = %name, host_id = %host.id(), "template build started");
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => {
                        tracing::info!(template = %name, "template build cancelled by its caller");
                        return;
                    }
                    n = upstream.next() => n,
                };
                let item = match next {
                    None => return,
                    Some(Err(s)) => Err(agent_error(&host, s)),
                    Some(Ok(ev)) => match &ev.event {
                        Some(Event::Template(t)) => {
                            match state.store.put_template(&record(t, &host)).await {
                                Ok(()) => {
                                    tracing::info!(template = %name, host_id = %host.id(), bytes = t.size_bytes, "template recorded");
                                    Ok(ev)
                                }
                                Err(e) => Err(store_error(e)),
                            }
                        }
                        _ => Ok(ev),
                    },
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list(
        &self,
        _request: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        let templates = self
            .state
            .store
            .list_templates()
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|r| to_proto(r, false))
            .collect();
        Ok(Response::new(ListTemplatesResponse { templates }))
    }

    async fn get(&self, request: Request<TemplateRef>) -> Result<Response<Template>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let rec = self
            .state
            .store
            .get_template(&name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("template {name} not found")))?;
        Ok(Response::new(to_proto(rec, true)))
    }

    /// Refused while sandboxes use the template unless `force`; the host's
    /// image goes first, then the record (a host that cannot be reached
    /// keeps both).
    async fn delete(
        &self,
        request: Request<DeleteTemplateRequest>,
    ) -> Result<Response<DeleteTemplateResponse>, Status> {
        let req = request.into_inner();
        check_name(&req.name)?;
        let rec = self
            .state
            .store
            .get_template(&req.name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("template {} not found", req.name)))?;
        if !req.force {
            let users = self
                .state
                .store
                .template_users(&req.name)
                .await
                .map_err(store_error)?;
            if !users.is_empty() {
                return Err(in_use(StoreError::TemplateInUse {
                    name: req.name,
                    sandboxes: users,
                }));
            }
        }
        if let Some(host) = self.state.hosts.get(&rec.host_id) {
            host.client()
                .delete_template(DeleteTemplateRequest {
                    name: req.name.clone(),
                    force: req.force,
                })
                .await
                .map_err(|s| agent_error(&host, s))?;
        }
        self.state
            .store
            .delete_template(&req.name, true)
            .await
            .map_err(store_error)?;
        tracing::info!(template = %req.name, force = req.force, "template deleted");
        Ok(Response::new(DeleteTemplateResponse {}))
    }
}

fn in_use(e: StoreError) -> Status {
    Status::failed_precondition(e.to_string())
}
