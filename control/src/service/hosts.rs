//! `wrenn.v1.Hosts`: the host table with each host's last observed state.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wrenn_proto::wrenn::v1::hosts_server::Hosts;
use wrenn_proto::wrenn::v1::{Host as HostMessage, ListHostsRequest, ListHostsResponse};

use super::store_error;
use crate::state::ControlState;

/// The `Hosts` service.
#[derive(Debug, Clone)]
pub struct HostsService {
    state: Arc<ControlState>,
}

impl HostsService {
    pub fn new(state: Arc<ControlState>) -> Self {
        HostsService { state }
    }
}

#[tonic::async_trait]
impl Hosts for HostsService {
    /// `sandboxes` counts the host's records that are not stopped; `state` is
    /// `unknown` until the first contact, then `ready` or `unreachable`.
    async fn list(
        &self,
        _request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let live = self
            .state
            .store
            .count_live_by_host()
            .await
            .map_err(store_error)?;
        let hosts = self
            .state
            .hosts
            .iter()
            .map(|h| HostMessage {
                id: h.id().to_owned(),
                agent_address: h.config().agent_address.clone(),
                proxy_address: h.config().proxy_address.clone(),
                state: h.state().as_str().to_owned(),
                sandboxes: live
                    .get(h.id())
                    .copied()
                    .unwrap_or(0)
                    .try_into()
                    .unwrap_or(u32::MAX),
            })
            .collect();
        Ok(Response::new(ListHostsResponse { hosts }))
    }
}
