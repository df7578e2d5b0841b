//! Follows the host agent's `WatchSandboxes` stream into the route table.
//!
//! # Design
//! The stream opens with a snapshot (`KIND_EXISTING` × n, then `KIND_SYNCED`)
//! and continues with live events. The snapshot is collected aside and
//! swapped in whole at `KIND_SYNCED`, so the table never shows half of it;
//! live events then update single routes. On a lost stream the watcher
//! reconnects with exponential backoff and resyncs the same way.
//!
//! The watcher has its own tonic channel to the agent: proxied bytes never
//! travel on it, and RPC never travels on the proxy's upstream pool.
//!
//! Each event is decoded with an explicit size limit, [`MAX_WATCH_EVENT`]:
//! an event above it ends the stream like any other error (the reason names
//! the limit), and the watcher reconnects.
//!
//! # Limitations
//! While the agent is unreachable (or its stream cannot be followed) the last
//! synced table keeps serving, and `/readyz` answers 503 until a complete
//! snapshot is in again: sandboxes destroyed meanwhile answer 502 (nothing
//! listens) rather than 404, and new ones are not routed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Endpoint;
use wrenn_proto::auth::{AuthChannel, Bearer, with_bearer};
use wrenn_proto::wrenn::v1::host_agent_client::HostAgentClient;
use wrenn_proto::wrenn::v1::sandbox_event::Kind;
use wrenn_proto::wrenn::v1::{Sandbox, SandboxEvent, SandboxState, WatchSandboxesRequest};
use wrenn_types::SandboxId;

use crate::metrics::Metrics;
use crate::routes::{Route, RouteOptions, RouteState, RouteTable};

/// The largest `WatchSandboxes` event the proxy decodes. A sandbox's env and
/// metadata together are capped at [`wrenn_types::MAX_SPEC_BYTES`] (64 KiB)
/// by the control plane and the agent, and events carry no env values; the
/// rest of an event is ids, an address, a netns path, timestamps and at most
/// [`wrenn_types::MAX_EGRESS_RULES`] networks per list. Four times the spec
/// cap leaves room for every legal event and still refuses a runaway one
/// long before tonic's default (4 MiB) would.
pub const MAX_WATCH_EVENT: usize = 4 * wrenn_types::MAX_SPEC_BYTES;

/// Where and how to watch.
#[derive(Debug, Clone)]
pub(crate) struct WatchSettings {
    pub agent: String,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("invalid agent address {agent:?}")]
    Endpoint {
        agent: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("unusable agent key for {agent:?}")]
    Key {
        agent: String,
        #[source]
        source: std::io::Error,
    },
}

/// A lazily connecting channel to the agent (connects on first use, so the
/// proxy starts even when the agent is not up yet).
pub(crate) fn agent_channel(
    agent: &str,
    key: &wrenn_proto::auth::Secret,
) -> Result<AuthChannel, WatchError> {
    let endpoint = Endpoint::from_shared(agent.to_owned())
        .map_err(|source| WatchError::Endpoint {
            agent: agent.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let bearer = Bearer::new(key.expose()).map_err(|source| WatchError::Key {
        agent: agent.to_owned(),
        source,
    })?;
    Ok(with_bearer(endpoint.connect_lazy(), bearer))
}

/// Keeps `table` in step with the agent until `shutdown` turns true.
pub(crate) async fn watch_agent(
    channel: AuthChannel,
    settings: WatchSettings,
    table: Arc<RouteTable>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = HostAgentClient::new(channel).max_decoding_message_size(MAX_WATCH_EVENT);
    let mut backoff = settings.backoff;
    loop {
        let outcome = tokio::select! {
            () = crate::listener::stopped(&mut shutdown) => return,
            o = follow(&mut client, &table, &metrics) => o,
        };
        metrics.watch_synced.set(0);
        metrics.watch_reconnects.inc();
        if outcome.synced {
            backoff = settings.backoff;
        }
        tracing::warn!(
            agent = %settings.agent,
            error = %outcome.reason,
            retry_in_ms = backoff.as_millis() as u64,
            "sandbox watch stream lost; keeping the last routes (not ready) and reconnecting"
        );
        table.mark_stale(format!(
            "the agent's sandbox watch stream was lost ({}); reconnecting",
            outcome.reason
        ));
        tokio::select! {
            () = crate::listener::stopped(&mut shutdown) => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

struct Outcome {
    /// Whether the stream got as far as a complete snapshot.
    synced: bool,
    reason: String,
}

/// Opens one stream and applies it until it ends.
async fn follow(
    client: &mut HostAgentClient<AuthChannel>,
    table: &RouteTable,
    metrics: &Metrics,
) -> Outcome {
    let mut stream = match client.watch_sandboxes(WatchSandboxesRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Outcome {
                synced: false,
                reason: status_reason(&status),
            };
        }
    };
    let mut snapshot: Option<HashMap<String, Route>> = Some(HashMap::new());
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Outcome {
                    synced: snapshot.is_none(),
                    reason: "stream ended".into(),
                };
            }
            Err(status) => {
                return Outcome {
                    synced: snapshot.is_none(),
                    reason: status_reason(&status),
                };
            }
        };
        metrics.watch_events.inc();
        if event.kind() == Kind::Synced {
            metrics.watch_synced.set(1);
        }
        apply(event, table, &mut snapshot);
    }
}

fn status_reason(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Applies one event: into the pending snapshot until `KIND_SYNCED`, to the table after.
pub(crate) fn apply(
    event: SandboxEvent,
    table: &RouteTable,
    snapshot: &mut Option<HashMap<String, Route>>,
) {
    let kind = event.kind();
    if kind == Kind::Synced {
        if let Some(routes) = snapshot.take() {
            tracing::info!(routes = routes.len(), "route table synced with the agent");
            table.replace_all(routes.into_values());
        }
        return;
    }
    let Some(sb) = event.sandbox else {
        tracing::warn!(kind = ?kind, "sandbox event without a sandbox; ignored");
        return;
    };
    let gone = kind == Kind::Destroyed
        || matches!(sb.state(), SandboxState::Stopped)
        || (kind == Kind::Unspecified && sb.state() == SandboxState::Unspecified);
    if gone {
        match snapshot {
            Some(s) => {
                s.remove(&sb.id);
            }
            None => {
                table.remove(&sb.id, Some(sb.generation));
            }
        }
        return;
    }
    let Some(route) = route_from(&sb, kind) else {
        return;
    };
    match snapshot {
        Some(s) => {
            s.insert(sb.id, route);
        }
        None => table.upsert(route),
    }
}

/// The route for a sandbox the agent reported, or `None` (logged) if it is malformed.
pub(crate) fn route_from(sb: &Sandbox, kind: Kind) -> Option<Route> {
    let id: SandboxId = match sb.id.parse() {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "agent reported a sandbox with an invalid id; ignored");
            return None;
        }
    };
    let state = match (sb.state(), kind) {
        (SandboxState::Running, _) => RouteState::Running,
        (SandboxState::Paused, _) => RouteState::Paused,
        (SandboxState::Starting, _) => RouteState::Starting,
        (_, Kind::Running | Kind::Resumed) => RouteState::Running,
        (_, Kind::Paused) => RouteState::Paused,
        _ => RouteState::Starting,
    };
    let address = if sb.address.is_empty() {
        None
    } else {
        match sb.address.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                tracing::warn!(sandbox_id = %id, address = %sb.address, "agent reported an address that is not an IP literal; the sandbox is unreachable");
                None
            }
        }
    };
    let (options, bad) = match &sb.spec {
        Some(spec) => RouteOptions::from_metadata(&spec.metadata),
        None => (RouteOptions::default(), Vec::new()),
    };
    if !bad.is_empty() {
        tracing::warn!(sandbox_id = %id, keys = ?bad, "ignoring proxy metadata with unknown values (use `localhost` or `public`)");
    }
    let route = Route::new(id, state, address, sb.generation, options);
    let netns = std::path::Path::new(&sb.netns);
    Some(match sb.netns.as_str() {
        "" => route,
        _ if netns.is_absolute() => route.with_netns(netns),
        _ => {
            tracing::warn!(sandbox_id = %route.id, netns = %sb.netns, "agent reported a network namespace that is not an absolute path; ignored");
            route
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind, id: &str, state: SandboxState, generation: u64) -> SandboxEvent {
        SandboxEvent {
            kind: kind as i32,
            sandbox: Some(Sandbox {
                id: id.into(),
                state: state as i32,
                address: "10.210.15.161".into(),
                generation,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn snapshot_lands_at_synced_then_live_events_apply() {
        let table = RouteTable::new();
        table.upsert(
            route_from(
                &event(Kind::Running, "stale", SandboxState::Running, 1)
                    .sandbox
                    .unwrap(),
                Kind::Running,
            )
            .unwrap(),
        );
        let mut snap = Some(HashMap::new());
        apply(
            event(Kind::Existing, "a", SandboxState::Running, 1),
            &table,
            &mut snap,
        );
        apply(
            event(Kind::Existing, "b", SandboxState::Paused, 1),
            &table,
            &mut snap,
        );
        assert!(
            table.get("a").is_none(),
            "the snapshot is not visible before KIND_SYNCED"
        );
        assert!(table.get("stale").is_some());
        apply(
            SandboxEvent {
                kind: Kind::Synced as i32,
                sandbox: None,
            },
            &table,
            &mut snap,
        );
        assert!(snap.is_none());
        assert!(
            table.get("stale").is_none(),
            "a resync drops routes the agent no longer has"
        );
        assert_eq!(table.get("b").unwrap().state, RouteState::Paused);
        apply(
            event(Kind::Resumed, "b", SandboxState::Running, 1),
            &table,
            &mut snap,
        );
        assert_eq!(table.get("b").unwrap().state, RouteState::Running);
        apply(
            event(Kind::Destroyed, "a", SandboxState::Stopped, 1),
            &table,
            &mut snap,
        );
        assert!(table.get("a").is_none());
    }

    #[test]
    fn malformed_sandboxes_are_skipped() {
        let mut sb = event(Kind::Created, "Bad-Id", SandboxState::Running, 1)
            .sandbox
            .unwrap();
        assert!(route_from(&sb, Kind::Created).is_none());
        sb.id = "ok".into();
        sb.address = "not-an-ip".into();
        let r = route_from(&sb, Kind::Created).unwrap();
        assert_eq!(r.address, None);
        sb.state = SandboxState::Unspecified as i32;
        assert_eq!(
            route_from(&sb, Kind::Created).unwrap().state,
            RouteState::Starting
        );
        assert_eq!(
            route_from(&sb, Kind::Resumed).unwrap().state,
            RouteState::Running
        );
    }
}
