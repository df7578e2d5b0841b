//! Assembly: start-up, the gRPC server, graceful shutdown.
//!
//! Design: shutdown first stops accepting (tonic's graceful shutdown sends
//! GOAWAY), then destroys the sandboxes (or keeps them), which ends every
//! relay and watch stream, then lets the runtime shrink its images, then
//! gives open calls [`DRAIN_GRACE`] to finish before closing them.
//!
//! Limitations: the destroy and shrink steps share one budget
//! (`shutdown_timeout_secs`); a step cut short by it is left to the next
//! start's adopt-or-clean.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;
use tracing::{info, warn};
use wrenn_proto::auth::RequireBearer;
use wrenn_proto::serve::ServerLimits;
use wrenn_proto::wrenn::v1::host_agent_server::HostAgentServer;
use wrenn_vmm::Runtime;

use crate::config::AgentConfig;
use crate::error::Error;
use crate::manager::{Manager, ManagerConfig};
use crate::service::AgentService;
use crate::spec::Limits;

/// HTTP/2 keepalive pings to callers: a dead control plane or proxy is noticed
/// within interval + timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request message (file chunks, command lines, a template build with
/// its COPY sources).
const MAX_REQUEST: usize = 256 * 1024 * 1024;
/// How long open calls get to finish once the sandboxes are gone.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// `GET /metrics`: the process's Prometheus registry as text (the create
/// steps of [`wrenn_vmm::steps`], the host's admission state), behind the
/// agent key like every other path but the health check.
async fn metrics(manager: Arc<Manager>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    manager.admission().observe();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

/// A running host agent.
pub struct Agent {
    addr: SocketAddr,
    manager: Arc<Manager>,
    keep_on_shutdown: bool,
    shutdown_timeout: Duration,
    stop_server: CancellationToken,
    server: JoinHandle<()>,
    reaper: JoinHandle<()>,
}

/// An agent dropped without [`Agent::shutdown`] (a test that failed half-way,
/// a caller's error path) stops its background work — the reaper, the host
/// monitor, the pool's filler — and its server at once, so nothing goes on
/// making sandboxes behind a cleanup. Sandboxes already made stay, as after
/// a crash: the next start adopts or cleans them.
impl Drop for Agent {
    fn drop(&mut self) {
        self.reaper.abort();
        self.stop_server.cancel();
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("addr", &self.addr).finish()
    }
}

impl Agent {
    /// Starts an agent over `runtime` (built by the caller; no image steps):
    /// binds `config.listen`, adopts or cleans what a previous run left
    /// (`Runtime::recover`), serves.
    pub async fn start_with_runtime(
        config: &AgentConfig,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Agent, Error> {
        validate(config)?;
        let listener = bind(config.listen).await?;
        Agent::serve(config, runtime, listener).await
    }

    /// Recovers, then serves on `listener`.
    pub(crate) async fn serve(
        config: &AgentConfig,
        runtime: Arc<dyn Runtime>,
        listener: tokio::net::TcpListener,
    ) -> Result<Agent, Error> {
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let key = wrenn_proto::auth::load_or_create_key(&config.key_path()).map_err(|source| {
            Error::Startup {
                step: "read or create the agent key",
                source: Box::new(source),
            }
        })?;
        let manager = Manager::new(runtime.clone(), manager_config(config));
        let recovered = runtime.recover().await.map_err(|e| Error::Startup {
            step: "recover sandboxes of a previous run",
            source: Box::new(e),
        })?;
        if !recovered.cleaned.is_empty() {
            info!(count = recovered.cleaned.len(), ids = ?recovered.cleaned, "removed leftovers of a previous run");
        }
        // A template build's sandboxes die with the build that ran them.
        let (builds, keep): (Vec<_>, Vec<_>) = recovered.adopted.into_iter().partition(|h| {
            h.spec
                .metadata
                .contains_key(wrenn_types::spec::BUILD_METADATA_KEY)
        });
        for h in builds {
            match runtime.destroy(&h.id).await {
                Ok(()) => {
                    info!(sandbox_id = %h.id, "destroyed a template build's sandbox left by a previous run")
                }
                Err(e) => {
                    warn!(sandbox_id = %h.id, error = %crate::error::chain(&e), "destroying a template build's sandbox left by a previous run")
                }
            }
        }
        let adopted = manager.adopt(keep).await;
        info!(count = adopted.len(), "adopted sandboxes of a previous run");

        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<HostAgentServer<AgentService>>()
            .await;
        let svc = HostAgentServer::new(AgentService::new(manager.clone()))
            .max_decoding_message_size(MAX_REQUEST);
        let routes: tonic::service::Routes = tonic::service::Routes::new(health)
            .add_service(svc)
            .into_axum_router()
            .route(
                "/metrics",
                axum::routing::get({
                    let m = manager.clone();
                    move || metrics(m.clone())
                }),
            )
            .into();
        let service = RequireBearer::new(&key).layer(routes);
        let stop_server = CancellationToken::new();
        let server = tokio::spawn(wrenn_proto::serve::serve(
            listener,
            service,
            limits(config),
            stop_server.clone(),
        ));
        let reaper = manager.spawn_reaper();
        info!(%addr, backend = ?runtime.backend(), "host agent serving");
        Ok(Agent {
            addr,
            manager,
            keep_on_shutdown: config.keep_sandboxes_on_shutdown,
            shutdown_timeout: config.shutdown_timeout(),
            stop_server,
            server,
            reaper,
        })
    }

    /// Where the gRPC server listens (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    /// Stops accepting, destroys the sandboxes (or keeps them, by config),
    /// lets the runtime shrink its images, and waits for the server to stop.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        info!(keep = self.keep_on_shutdown, "host agent shutting down");
        self.stop_server.cancel();
        let budget = self.shutdown_timeout;
        let steps = async {
            self.manager.shutdown(self.keep_on_shutdown).await;
            if let Err(e) = self.manager.runtime().shutdown(budget).await {
                warn!(error = %crate::error::chain(&e), "runtime shutdown (image shrink)");
            }
        };
        if tokio::time::timeout(budget, steps).await.is_err() {
            warn!(
                timeout_s = budget.as_secs(),
                "shutdown steps did not finish in time"
            );
        }
        self.reaper.abort();
        match tokio::time::timeout(DRAIN_GRACE * 2, &mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(join)) => warn!(error = %join, "server task ended abnormally"),
            Err(_) => {
                warn!(
                    grace_s = DRAIN_GRACE.as_secs(),
                    "calls still open after the grace period; closing them"
                );
                self.server.abort();
            }
        }
        info!("host agent stopped");
        Ok(())
    }
}

/// The listener's timeouts: a request within 10 s of connecting (HTTP/1.1
/// and HTTP/2 alike), connections with no call in progress closed after
/// 620 s (Wrenn's host agent has the same), keepalive pings to callers.
fn limits(c: &AgentConfig) -> ServerLimits {
    ServerLimits {
        header_read_timeout: c.header_read_timeout(),
        idle_timeout: c.idle_timeout(),
        http2_keepalive_interval: KEEPALIVE_INTERVAL,
        http2_keepalive_timeout: KEEPALIVE_TIMEOUT,
        shutdown_grace: DRAIN_GRACE,
    }
}

/// Binds the gRPC listener (first thing at start-up).
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

pub(crate) fn validate(c: &AgentConfig) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Config(m));
    if c.runtime.slot_first == 0
        || c.runtime.slot_first > c.runtime.slot_last
        || c.runtime.slot_last == u16::MAX
    {
        return bad(format!(
            "runtime.slot_first..=runtime.slot_last ({}..={}) must be a non-empty range within 1..=65534",
            c.runtime.slot_first, c.runtime.slot_last
        ));
    }
    if c.default_timeout_secs == 0 {
        return bad("default_timeout_secs must be at least 1".into());
    }
    if c.default_timeout_secs > c.max_timeout_secs {
        return bad(format!(
            "default_timeout_secs ({}) is above max_timeout_secs ({})",
            c.default_timeout_secs, c.max_timeout_secs
        ));
    }
    if c.pool_size > 0
        && let Err(e) = wrenn_types::spec::check_template(&c.pool_template)
    {
        return bad(format!("pool_template: {}", e.reason));
    }
    if c.guest_ready_timeout_ms == 0 {
        return bad("guest_ready_timeout_ms must be at least 1".into());
    }
    let p = &c.runtime.prefix;
    if p.is_empty()
        || !p
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        // Host-global names (netns, cgroups, nftables table) derive from it.
        return bad(format!(
            "runtime.prefix {p:?} must be lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

fn manager_config(c: &AgentConfig) -> ManagerConfig {
    let host_id = if c.host_id.is_empty() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned())
    } else {
        c.host_id.clone()
    };
    ManagerConfig {
        host_id,
        dir: c.dir.clone(),
        limits: Limits {
            default_timeout_secs: c.default_timeout_secs,
            max_timeout_secs: c.max_timeout_secs,
        },
        guest_ready_timeout: c.guest_ready_timeout(),
        guest_poll_interval: c.guest_poll_interval(),
        pool_size: c.pool_size as usize,
        pool_template: c.pool_template.clone(),
        admission: crate::manager::admission::Policy {
            reserve: crate::manager::admission::Free {
                memory_mb: c.reserve_memory_mb,
                disk_mb: c.reserve_disk_mb,
            },
            memory_overcommit: c.memory_overcommit,
            disk_overcommit: c.disk_overcommit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_setting() {
        let mut c = AgentConfig::default();
        c.runtime.slot_first = 10;
        c.runtime.slot_last = 5;
        assert!(
            validate(&c)
                .unwrap_err()
                .to_string()
                .contains("runtime.slot_first")
        );
        let mut c = AgentConfig::default();
        c.default_timeout_secs = c.max_timeout_secs + 1;
        assert!(
            validate(&c)
                .unwrap_err()
                .to_string()
                .contains("max_timeout_secs")
        );
        let mut c = AgentConfig::default();
        c.runtime.prefix = "Bad/Prefix".into();
        assert!(
            validate(&c)
                .unwrap_err()
                .to_string()
                .contains("runtime.prefix")
        );
        assert!(validate(&AgentConfig::default()).is_ok());
    }
}
