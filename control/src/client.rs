//! A client for the control plane's API, for the CLI, SDK-like tools and
//! tests: a channel to the control plane plus the bearer key on every call.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use wrenn_proto::wrenn::v1::hosts_client::HostsClient;
use wrenn_proto::wrenn::v1::keys_client::KeysClient;
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

pub use wrenn_proto::auth::Bearer;

/// The credential that presents `api_key` (surrounding whitespace ignored)
/// on every call: the one client interceptor of the CLI, the benchmarks and
/// the tests.
pub fn bearer(api_key: &str) -> Result<Bearer, ClientError> {
    Bearer::new(api_key.trim()).map_err(|_| ClientError::KeyNotAscii)
}

/// A channel whose every call carries the API key.
pub type AuthedChannel = wrenn_proto::auth::AuthChannel;

/// The services on one channel.
#[derive(Debug, Clone)]
pub struct Client {
    pub sandboxes: SandboxesClient<AuthedChannel>,
    pub hosts: HostsClient<AuthedChannel>,
    pub keys: KeysClient<AuthedChannel>,
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
        Ok(Client::with_channel(channel, bearer(api_key)?))
    }

    /// Wraps an existing channel.
    pub fn with_channel(channel: Channel, auth: Bearer) -> Client {
        Client {
            sandboxes: SandboxesClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            hosts: HostsClient::with_interceptor(channel.clone(), auth.clone()),
            keys: KeysClient::with_interceptor(channel, auth),
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
