//! The two public URL forms of a sandbox port, as `wrenn url <id> <port>` prints them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use wrenn_types::SandboxId;

use crate::config::ProxyConfig;

/// Both ways a browser reaches `port` in a sandbox through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUrls {
    /// `http://<port>-<id>.<domain>:<proxy port>/` — the app sees itself at `/`.
    pub subdomain: String,
    /// `http://<host>:<proxy port>/proxy/<id>/<port>/` — one host for every sandbox.
    pub path: String,
}

impl fmt::Display for SandboxUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.subdomain)?;
        write!(f, "{}", self.path)
    }
}

/// Formats both URL forms. `host` is how clients name the proxy (a name or
/// an IP literal, no port); `proxy_port` 80 is left out of the URLs.
pub fn sandbox_urls(
    domain: &str,
    host: &str,
    proxy_port: u16,
    id: &SandboxId,
    port: u16,
) -> SandboxUrls {
    let port_suffix = if proxy_port == 80 {
        String::new()
    } else {
        format!(":{proxy_port}")
    };
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_owned(),
    };
    SandboxUrls {
        subdomain: format!("http://{port}-{id}.{domain}{port_suffix}/"),
        path: format!("http://{host}{port_suffix}/proxy/{id}/{port}/"),
    }
}

/// The host clients use for a proxy listening on `listen`: `localhost` for a
/// loopback or unspecified address, the address itself otherwise.
pub fn public_host(listen: SocketAddr) -> String {
    let ip = listen.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        "localhost".to_owned()
    } else {
        ip.to_string()
    }
}

impl ProxyConfig {
    /// Both URL forms of `port` in sandbox `id` for a proxy with this config.
    pub fn sandbox_urls(&self, id: &SandboxId, port: u16) -> SandboxUrls {
        sandbox_urls(
            &self.domain,
            &public_host(self.listen),
            self.listen.port(),
            id,
            port,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SandboxId {
        "abc123".parse().unwrap()
    }

    #[test]
    fn default_config_formats_both_forms() {
        let urls = ProxyConfig::default().sandbox_urls(&id(), 8000);
        assert_eq!(urls.subdomain, "http://8000-abc123.localhost:7880/");
        assert_eq!(urls.path, "http://localhost:7880/proxy/abc123/8000/");
        assert_eq!(
            urls.to_string(),
            format!("{}\n{}", urls.subdomain, urls.path)
        );
    }

    #[test]
    fn port_80_is_omitted_and_ipv6_is_bracketed() {
        let urls = sandbox_urls("sb.example.com", "::1", 80, &id(), 3000);
        assert_eq!(urls.subdomain, "http://3000-abc123.sb.example.com/");
        assert_eq!(urls.path, "http://[::1]/proxy/abc123/3000/");
        let urls = sandbox_urls("localhost", "10.0.0.5", 7880, &id(), 1);
        assert_eq!(urls.path, "http://10.0.0.5:7880/proxy/abc123/1/");
    }

    #[test]
    fn public_host_prefers_localhost_for_loopback_and_any() {
        assert_eq!(public_host("0.0.0.0:7880".parse().unwrap()), "localhost");
        assert_eq!(public_host("127.0.0.1:7880".parse().unwrap()), "localhost");
        assert_eq!(public_host("192.0.2.7:7880".parse().unwrap()), "192.0.2.7");
    }
}
