//! The hosts the control plane schedules onto, each with its own tonic
//! channel to its host agent.
//!
//! # Design
//!
//! One lazily connected HTTP/2 channel per host, with keepalive pings, carries
//! every lifecycle and interactive call to that host; it is never shared with
//! data-plane traffic. The channel reconnects by itself after the agent
//! restarts. Host state (`unknown` until first contact, then `ready` or
//! `unreachable`) is set by the reconciler and by calls that fail to connect.
//!
//! # Limitations
//!
//! - The table is fixed at start; adding hosts at run time would need a lock
//!   around it (the rest of the code already goes through [`HostTable::get`]).
//! - Scheduling is "fewest live sandboxes among reachable hosts".

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::Endpoint;
use wrenn_proto::auth::{AuthChannel, Bearer, with_bearer};
use wrenn_proto::wrenn::v1::host_agent_client::HostAgentClient;

use crate::error::Error;

/// One host agent the control plane schedules onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Stable id, recorded with every sandbox placed on the host.
    pub id: String,
    /// `http://HOST:PORT` of its `HostAgent` gRPC service.
    pub agent_address: String,
    /// Address of its proxy (data plane), if any; reported by `Hosts.List`.
    pub proxy_address: String,
    /// The key its agent requires (`<dir>/agent.key` on that host); empty
    /// presents none.
    pub agent_key: wrenn_proto::auth::Secret,
}

impl HostConfig {
    pub fn new(id: impl Into<String>, agent_address: impl Into<String>) -> Self {
        HostConfig {
            id: id.into(),
            agent_address: agent_address.into(),
            proxy_address: String::new(),
            agent_key: Default::default(),
        }
    }
}

/// Largest message accepted from an agent: unary `Exec` output (16 MiB by
/// default, more on request) must fit.
pub const MAX_AGENT_MESSAGE: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reachability of a host as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Unknown,
    Ready,
    Unreachable,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Unknown => "unknown",
            HostState::Ready => "ready",
            HostState::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone)]
struct Status {
    state: HostState,
    live_sandboxes: u32,
    last_error: Option<String>,
}

/// One host agent.
#[derive(Debug)]
pub struct Host {
    config: HostConfig,
    channel: AuthChannel,
    client: HostAgentClient<AuthChannel>,
    status: Mutex<Status>,
}

impl Host {
    /// Builds the host's channel (not yet connected).
    pub fn new(
        config: HostConfig,
        keepalive: Duration,
        keepalive_timeout: Duration,
    ) -> Result<Self, Error> {
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| Error::AgentAddress {
            host: config.id.clone(),
            address: config.agent_address.clone(),
            source,
        };
        if !config.agent_address.starts_with("http://") {
            return Err(bad("only http:// addresses are supported".into()));
        }
        let endpoint = Endpoint::from_shared(config.agent_address.clone())
            .map_err(|e| bad(Box::new(e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive_timeout)
            .keep_alive_while_idle(true);
        let bearer = Bearer::new(config.agent_key.expose()).map_err(|e| bad(Box::new(e)))?;
        let channel = with_bearer(endpoint.connect_lazy(), bearer);
        let client = HostAgentClient::new(channel.clone())
            .max_decoding_message_size(MAX_AGENT_MESSAGE)
            .max_encoding_message_size(MAX_AGENT_MESSAGE);
        Ok(Host {
            config,
            channel,
            client,
            status: Mutex::new(Status {
                state: HostState::Unknown,
                live_sandboxes: 0,
                last_error: None,
            }),
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// A client on the host's channel (cheap: clones share the channel).
    pub fn client(&self) -> HostAgentClient<AuthChannel> {
        self.client.clone()
    }

    /// The host's channel itself, for calls made without the generated
    /// client (an upload with its own codec).
    pub fn channel(&self) -> AuthChannel {
        self.channel.clone()
    }

    pub fn state(&self) -> HostState {
        self.status.lock().state
    }

    /// Live sandboxes the agent reported at last contact.
    pub fn live_sandboxes(&self) -> u32 {
        self.status.lock().live_sandboxes
    }

    pub fn last_error(&self) -> Option<String> {
        self.status.lock().last_error.clone()
    }

    pub(crate) fn mark_ready(&self, live_sandboxes: u32) {
        let mut s = self.status.lock();
        if s.state != HostState::Ready {
            tracing::info!(host_id = %self.config.id, "host agent reachable");
        }
        s.state = HostState::Ready;
        s.live_sandboxes = live_sandboxes;
        s.last_error = None;
    }

    pub(crate) fn mark_unreachable(&self, error: String) {
        let mut s = self.status.lock();
        if s.state != HostState::Unreachable {
            tracing::warn!(host_id = %self.config.id, address = %self.config.agent_address, %error, "host agent unreachable");
        }
        s.state = HostState::Unreachable;
        s.last_error = Some(error);
    }
}

/// Every host, by id.
#[derive(Debug, Default)]
pub struct HostTable {
    hosts: BTreeMap<String, Arc<Host>>,
}

impl HostTable {
    pub fn new(hosts: impl IntoIterator<Item = Host>) -> Result<Self, Error> {
        let mut map = BTreeMap::new();
        for h in hosts {
            let id = h.id().to_owned();
            if map.insert(id.clone(), Arc::new(h)).is_some() {
                return Err(Error::DuplicateHost(id));
            }
        }
        if map.is_empty() {
            return Err(Error::NoHosts);
        }
        Ok(HostTable { hosts: map })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Host>> {
        self.hosts.get(id).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Host>> {
        self.hosts.values()
    }

    /// The one host, when the table has only one: no choice to make, so a
    /// create need not count the store's records.
    pub fn only(&self) -> Option<Arc<Host>> {
        let mut all = self.hosts.values();
        match (all.next(), all.next()) {
            (Some(h), None) => Some(h.clone()),
            _ => None,
        }
    }

    /// Where a new sandbox goes: the reachable (or not yet contacted) host with
    /// the fewest live records; every host being unreachable still yields one,
    /// so the caller gets the agent's own connection error.
    pub fn choose(&self, live_by_host: &HashMap<String, u64>) -> Arc<Host> {
        let load = |h: &Arc<Host>| live_by_host.get(h.id()).copied().unwrap_or(0);
        self.hosts
            .values()
            .filter(|h| h.state() != HostState::Unreachable)
            .min_by_key(|h| load(h))
            .or_else(|| self.hosts.values().min_by_key(|h| load(h)))
            .cloned()
            .expect("HostTable::new refuses an empty table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str) -> Host {
        let cfg = HostConfig::new(id, "http://127.0.0.1:1");
        Host::new(cfg, Duration::from_secs(30), Duration::from_secs(20)).unwrap()
    }

    #[tokio::test]
    async fn chooses_the_least_loaded_reachable_host() {
        let table = HostTable::new([host("a"), host("b"), host("c")]).unwrap();
        let load: HashMap<String, u64> = [
            ("a".to_owned(), 5),
            ("b".to_owned(), 1),
            ("c".to_owned(), 0),
        ]
        .into();
        table.get("c").unwrap().mark_unreachable("down".into());
        assert_eq!(table.choose(&load).id(), "b");
        for h in table.iter() {
            h.mark_unreachable("down".into());
        }
        assert_eq!(table.choose(&load).id(), "c");
        assert!(table.only().is_none());
        let one = HostTable::new([host("solo")]).unwrap();
        assert_eq!(
            one.only().map(|h| h.id().to_owned()).as_deref(),
            Some("solo")
        );
    }

    #[tokio::test]
    async fn refuses_bad_tables_and_addresses() {
        assert!(matches!(HostTable::new([]), Err(Error::NoHosts)));
        assert!(matches!(
            HostTable::new([host("a"), host("a")]),
            Err(Error::DuplicateHost(id)) if id == "a"
        ));
        let err = Host::new(
            HostConfig::new("x", "127.0.0.1:7801"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        let msg = crate::error::Chain(&err).to_string();
        assert!(
            msg.contains("host x") && msg.contains("127.0.0.1:7801"),
            "{msg}"
        );
    }
}
