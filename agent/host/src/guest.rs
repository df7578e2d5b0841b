//! The agent's connection to one sandbox's guest agent.
//!
//! Design: every sandbox gets its own tonic channel (one HTTP/2 connection),
//! made when the sandbox is created and dropped when it is destroyed, so one
//! sandbox's traffic never queues behind another's. Readiness is the guest's
//! `grpc.health.v1.Health/Check` answering `SERVING`; a guest without the
//! health service counts as ready once `process.Process/List` answers.
//!
//! Limitations: the channel has no HTTP/2 keepalive pings. A paused sandbox
//! cannot answer pings, and a ping timeout would break the streams its
//! processes continue after resume; a guest that dies is noticed when its TCP
//! connection resets or when the sandbox is destroyed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use wrenn_proto::auth::{AuthChannel, Bearer, with_bearer};
use wrenn_proto::filesystem::filesystem_client::FilesystemClient;
use wrenn_proto::process::{ListRequest, process_client::ProcessClient};
use wrenn_proto::wrenn::v1::{AssignRequest, guest_client::GuestClient};

/// Bound on one connect attempt to the guest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause between two readiness probes (doubling up to the interval).
const FIRST_PAUSE: Duration = Duration::from_millis(1);
/// Bound on one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 windows: large enough for file transfers at memory speed, bounded.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest message accepted from the guest (file chunks are 64 KiB).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A sandbox's dedicated channel to its guest agent; every call presents
/// the guest's token.
#[derive(Debug, Clone)]
pub struct Guest {
    addr: SocketAddr,
    channel: AuthChannel,
}

impl Guest {
    /// A channel to the guest at `addr` whose calls present `token`
    /// (empty: none); connects on first use.
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a socket address is a valid URI authority")
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let bearer = Bearer::new(token).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unusable guest token; calls will be refused");
            Bearer::none()
        });
        Guest {
            addr,
            channel: with_bearer(endpoint.connect_lazy(), bearer),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn process(&self) -> ProcessClient<AuthChannel> {
        ProcessClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub fn filesystem(&self) -> FilesystemClient<AuthChannel> {
        FilesystemClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Tells the guest of a pooled sandbox the id, environment and envd
    /// access token it was handed out with (`wrenn.v1.Guest/Assign`).
    pub async fn assign(&self, spec: &wrenn_vmm::SandboxSpec) -> Result<(), String> {
        let mut client = GuestClient::new(self.channel.clone());
        let call = client.assign(AssignRequest {
            sandbox_id: spec.id.to_string(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            envd_access_token: spec.envd_access_token.clone(),
        });
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(status_text(&s)),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }

    /// One readiness probe: `Ok` when the guest serves.
    pub async fn probe(&self) -> Result<(), String> {
        let fut = async {
            let mut health = HealthClient::new(self.channel.clone());
            match health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
                Ok(r) => Err(format!("health status {:?}", r.get_ref().status())),
                Err(s) if s.code() == Code::Unimplemented => self
                    .process()
                    .list(ListRequest {})
                    .await
                    .map(drop)
                    .map_err(|s| status_text(&s)),
                Err(s) => Err(status_text(&s)),
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }

    /// Probes (backing off up to every `interval`) until the guest serves or `timeout` passed;
    /// the error is the last probe's.
    pub async fn wait_ready(
        &self,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let deadline = start + timeout;
        // A guest usually serves within milliseconds of its start: probe
        // after 1, 2, 4 … ms, then every `interval`.
        let mut pause = FIRST_PAUSE.min(interval);
        loop {
            let last = match tokio::time::timeout_at(deadline, self.probe()).await {
                Ok(Ok(())) => return Ok(start.elapsed()),
                Ok(Err(e)) => e,
                Err(_) => "probe cut short by the deadline".to_owned(),
            };
            if Instant::now() + pause >= deadline {
                return Err(last);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(interval);
        }
    }
}

/// A status as one line, with the transport error's causes when there are.
pub fn status_text(s: &Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let mut cur = std::error::Error::source(s);
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_gives_up_with_the_last_error() {
        // Listening but never answering: the port stays ours for the test.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let g = Guest::new(silent.local_addr().unwrap(), "");
        let start = Instant::now();
        let err = g
            .wait_ready(Duration::from_millis(10), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            err.contains("deadline") || err.contains("no answer"),
            "{err}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "gave up at the deadline"
        );
    }

    #[tokio::test]
    async fn readiness_succeeds_against_a_health_server() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let g = Guest::new(addr, "");
        g.wait_ready(Duration::from_millis(10), Duration::from_secs(5))
            .await
            .unwrap();
        server.abort();
    }
}
