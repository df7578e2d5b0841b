//! Errors of starting and running the control plane, and a helper to print an
//! error with its whole cause chain.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::AuthError;
use crate::store::StoreError;

/// Why [`start`](crate::start) or [`Control::wait`](crate::Control::wait) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the store {location}")]
    Store {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot set up API keys in {dir}")]
    Auth {
        dir: PathBuf,
        #[source]
        source: AuthError,
    },
    #[error("no hosts configured: give at least one host agent address")]
    NoHosts,
    #[error("host {host}: invalid agent address {address:?} (expected http://HOST:PORT)")]
    AgentAddress {
        host: String,
        address: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("host id {0:?} appears twice")]
    DuplicateHost(String),
    #[error("cannot register host {host} in the store")]
    RegisterHost {
        host: String,
        #[source]
        source: StoreError,
    },
    #[error("extension {name} failed to install")]
    Extension {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the control plane server stopped unexpectedly")]
    ServerTask(#[source] tokio::task::JoinError),
}

pub use wrenn_types::Chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_every_cause() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io,
        };
        assert_eq!(
            Chain(&err).to_string(),
            "cannot listen on 127.0.0.1:1: disk on fire"
        );
    }
}
