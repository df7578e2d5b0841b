//! A client for the control plane's API, for the CLI, SDK-like tools and
//! tests: a channel to the control plane plus the bearer key on every call.

use std::path::Path;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use wrenn_proto::wrenn::v1::hosts_client::HostsClient;
use wrenn_proto::wrenn::v1::sandboxes_client::SandboxesClient;

use crate::auth::ADMIN_KEY_FILE;

/// Largest message the client accepts (unary `Exec` output can be large).
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Errors of connecting a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid control plane address {address:?}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the control plane at {address}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the API key is not valid header text")]
    KeyNotAscii,
    #[error("cannot read the API key from {path}")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Adds `authorization: Bearer <key>` to every request.
#[derive(Clone)]
pub struct BearerAuth(MetadataValue<Ascii>);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth(…)")
    }
}

impl BearerAuth {
    pub fn new(api_key: &str) -> Result<Self, ClientError> {
        format!("Bearer {}", api_key.trim())
            .parse()
            .map(BearerAuth)
            .map_err(|_| ClientError::KeyNotAscii)
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type AuthedChannel = InterceptedService<Channel, BearerAuth>;

/// Both services on one channel.
#[derive(Debug, Clone)]
pub struct Client {
    pub sandboxes: SandboxesClient<AuthedChannel>,
    pub hosts: HostsClient<AuthedChannel>,
}

impl Client {
    /// Connects to `address` (`http://HOST:PORT`) and authenticates with
    /// `api_key`.
    pub async fn connect(address: &str, api_key: &str) -> Result<Client, ClientError> {
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|source| ClientError::Address {
                address: address.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_owned(),
                source,
            })?;
        Ok(Client::with_channel(channel, BearerAuth::new(api_key)?))
    }

    /// Wraps an existing channel.
    pub fn with_channel(channel: Channel, auth: BearerAuth) -> Client {
        Client {
            sandboxes: SandboxesClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            hosts: HostsClient::with_interceptor(channel, auth),
        }
    }
}

/// Reads the admin key `start` wrote to `<wrenn_dir>/admin.key`.
pub fn read_admin_key(wrenn_dir: &Path) -> Result<String, ClientError> {
    let path = wrenn_dir.join(ADMIN_KEY_FILE);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| ClientError::ReadKey {
            path: path.display().to_string(),
            source,
        })
}
