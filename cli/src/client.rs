//! The connection to the control plane: address, API key, auth metadata.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::transport::{Channel, Endpoint};
use wrenn_control::client::{AuthedChannel, Bearer, bearer};
use wrenn_proto::wrenn::v1::hosts_client::HostsClient;
use wrenn_proto::wrenn::v1::keys_client::KeysClient;
use wrenn_proto::wrenn::v1::sandboxes_client::SandboxesClient;
use wrenn_proto::wrenn::v1::templates_client::TemplatesClient as TemplatesGrpc;

use crate::exit::Unreachable;

pub const DEFAULT_CONTROL: &str = "http://127.0.0.1:7800";
pub const DEFAULT_DIR: &str = "/var/lib/wrenn";

#[derive(clap::Args, Clone)]
pub struct GlobalArgs {
    /// Control plane address.
    #[arg(long, global = true, env = "WRENN_CONTROL", default_value = DEFAULT_CONTROL)]
    pub control: String,
    /// API key (default: the admin key in $WRENN_DIR/admin.key).
    #[arg(long, global = true, env = "WRENN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// State directory (for the admin key).
    #[arg(long, global = true, env = "WRENN_DIR", default_value = DEFAULT_DIR)]
    pub wrenn_dir: PathBuf,
}

pub type Client = SandboxesClient<AuthedChannel>;
pub type TemplatesClient = TemplatesGrpc<AuthedChannel>;

impl GlobalArgs {
    fn api_key(&self) -> Result<String> {
        if let Some(k) = &self.api_key {
            return Ok(k.trim().to_owned());
        }
        let path = self.wrenn_dir.join("admin.key");
        let key = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no API key: set WRENN_API_KEY or pass --api-key (tried {})",
                path.display()
            )
        })?;
        Ok(key.trim().to_owned())
    }

    /// The `Hosts` service on the same control plane.
    pub async fn connect_hosts(&self) -> Result<HostsClient<AuthedChannel>> {
        let (channel, auth) = self.channel().await?;
        Ok(HostsClient::with_interceptor(channel, auth))
    }

    /// The `Keys` service on the same control plane.
    pub async fn connect_keys(&self) -> Result<KeysClient<AuthedChannel>> {
        let (channel, auth) = self.channel().await?;
        Ok(KeysClient::with_interceptor(channel, auth))
    }

    /// The `Templates` service on the same control plane (a build carries
    /// its COPY sources: large messages allowed).
    pub async fn connect_templates(&self) -> Result<TemplatesClient> {
        let (channel, auth) = self.channel().await?;
        Ok(TemplatesGrpc::with_interceptor(channel, auth)
            .max_encoding_message_size(wrenn_control::MAX_MESSAGE)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Connects to the control plane with the API key attached to every call.
    pub async fn connect(&self) -> Result<Client> {
        let (channel, auth) = self.channel().await?;
        Ok(SandboxesClient::with_interceptor(channel, auth)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    async fn channel(&self) -> Result<(Channel, Bearer)> {
        let key = self.api_key()?;
        let auth =
            bearer(&key).context("the API key contains characters not allowed in a header")?;
        let channel = Endpoint::from_shared(self.control.clone())
            .with_context(|| format!("invalid control plane address {:?}", self.control))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|e| Unreachable {
                address: self.control.clone(),
                source: Some(Box::new(e)),
            })?;
        Ok((channel, auth))
    }
}

/// Parses `K=V` arguments.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_parsing() {
        assert_eq!(parse_kv("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_kv("A=").unwrap(), ("A".into(), "".into()));
        assert!(parse_kv("=x").is_err());
        assert!(parse_kv("nokey").unwrap_err().contains("KEY=VALUE"));
    }
}
