//! The proxy's configuration: one plain serde struct, every default a named
//! constant, unknown keys rejected.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrenn_proto::auth::Secret;

/// Browsers connect here (`wrenn proxy --listen`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7880";
/// `/metrics`, `/healthz`, `/readyz` and `/routes` are served here.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7881";
/// Subdomain routing answers `<port>-<sandbox-id>.<domain>`.
pub const DEFAULT_DOMAIN: &str = "localhost";
/// The host agent whose `WatchSandboxes` stream fills the route table.
pub const DEFAULT_AGENT: &str = "http://127.0.0.1:7801";
/// Deadline for receiving a request's headers, from its first byte (from
/// accept for a connection's first request).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// How long an idle client keep-alive connection is kept open.
pub const DEFAULT_KEEPALIVE_IDLE_SECS: u64 = 620;
/// Requests served on one client connection before it is closed.
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// Per-read timeout on request bodies (Pingora's default is also 60 s).
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 60;
/// Per-write timeout towards clients that stop reading.
pub const DEFAULT_WRITE_TIMEOUT_SECS: u64 = 60;
/// How long an upgraded (WebSocket) connection may stay silent in both
/// directions. Long enough for an idle Jupyter kernel tab.
pub const DEFAULT_WEBSOCKET_IDLE_SECS: u64 = 3600;
/// Timeout of one upstream connect attempt; a vanished netns cannot hang a request.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;
/// Connect attempts before answering 502 (connect failures only).
pub const DEFAULT_CONNECT_ATTEMPTS: u32 = 3;
/// Sleep before retry `n` is `n × this` (100 ms, then 200 ms).
pub const DEFAULT_CONNECT_BACKOFF_MS: u64 = 100;
/// Per-read timeout on upstream responses; 0 means none (long polls, SSE).
pub const DEFAULT_UPSTREAM_READ_TIMEOUT_SECS: u64 = 0;
/// How long an idle upstream connection stays pooled. Shorter than common app
/// keep-alives (Node: 5 s) so a pooled socket is not reused just as the app closes it.
pub const DEFAULT_UPSTREAM_IDLE_SECS: u64 = 4;
/// Idle upstream connections kept in the pool, all upstreams together.
pub const DEFAULT_POOL_SIZE: usize = 1024;
/// Requests in flight to one upstream (sandbox, port) above which the proxy
/// asks for `Connection: close`, so no more than about this many idle sockets
/// per upstream are pooled.
pub const DEFAULT_UPSTREAM_MAX_IN_FLIGHT: u32 = 256;
/// Time in-flight requests get to finish after shutdown begins.
pub const DEFAULT_GRACE_PERIOD_SECS: u64 = 10;
/// Reconnect delay after the agent stream is lost; doubles up to the cap.
pub const DEFAULT_WATCH_BACKOFF_MS: u64 = 100;
pub const DEFAULT_WATCH_BACKOFF_MAX_MS: u64 = 5000;
/// The longest request head (request line and header fields, up to and
/// including the blank line) the proxy reads; a longer one is answered
/// `431 Request Header Fields Too Large`. Not configurable: it is wrenn's
/// own limit, below Pingora's (1 MiB, answered with a bare 400).
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields a request may carry (Pingora's own limit, which it
/// answers with a bare 400); more are answered `431` like a head too long.
pub const MAX_REQUEST_HEADER_FIELDS: usize = 256;

/// Configuration of one proxy instance. `wrenn proxy` builds it from flags,
/// the config file and the environment; tests build it directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address browsers connect to.
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`); `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Domain of the subdomain form `<port>-<id>.<domain>`.
    pub domain: String,
    /// Host agent gRPC address (`http://host:port`).
    pub agent: String,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    pub header_timeout_secs: u64,
    pub keepalive_idle_secs: u64,
    pub keepalive_requests: u32,
    pub read_timeout_secs: u64,
    pub write_timeout_secs: u64,
    pub websocket_idle_secs: u64,
    pub connect_timeout_ms: u64,
    pub connect_attempts: u32,
    pub connect_backoff_ms: u64,
    pub upstream_read_timeout_secs: u64,
    pub upstream_idle_secs: u64,
    pub pool_size: usize,
    pub upstream_max_in_flight: u32,
    pub grace_period_secs: u64,
    pub watch_backoff_ms: u64,
    pub watch_backoff_max_ms: u64,
    /// One `wrenn_proxy::access` line per request.
    pub access_log: bool,
    /// Sandbox ports the proxy refuses outright (403 `port_denied`); none
    /// by default. The guest agent's port (49983) needs no entry: it is
    /// always refused except to requests that look like envd clients' (E2B's
    /// SDKs): a non-empty `X-Access-Token`, `GET /health`, or `/files` with
    /// a `signature` query parameter, whose token or signature the guest
    /// then checks itself. Listing 49983 here refuses those too: E2B's SDKs
    /// then cannot reach the sandbox (wrenn's CLI and API still can).
    pub denied_ports: Vec<u16>,
    /// How upstream connections are opened; see [`UpstreamConnect`].
    pub upstream_connect: UpstreamConnect,
    /// Serve plain `GET`/`HEAD` requests on wrenn's own HTTP/1.1 fast path
    /// (`fast.rs`); `false` sends every request through Pingora's `HttpProxy`.
    pub fast_path: bool,
    /// More `Host` values both listeners answer, beside their own (see
    /// [`crate::hosts`] for the rules): exact names (`proxy.internal`),
    /// `*.suffix` wildcards, IP literals (`192.0.2.7`, `[2001:db8::7]`), each
    /// optionally with `:port` to allow that port only.
    pub allowed_hosts: Vec<String>,
    /// The host agent's key: `/routes` on the admin listener requires
    /// `authorization: Bearer <key>`, and is disabled (404) while it is
    /// empty. Never read from or written to a config file; `wrenn proxy`
    /// fills it from the agent's key file.
    #[serde(skip)]
    pub agent_key: Secret,
}

/// How the proxy opens upstream connections (`upstream_connect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamConnect {
    /// `netns` when the proxy may enter network namespaces (root), else `direct`.
    #[default]
    Auto,
    /// Dial the sandbox's address from the host only: apps bound to
    /// `127.0.0.1` inside a namespace sandbox are unreachable unless the
    /// guest agent forwards them.
    Direct,
    /// The namespace fast path ([`crate::netns`]); fails at start without
    /// `CAP_SYS_ADMIN`.
    Netns,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            admin_listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("valid default")),
            domain: DEFAULT_DOMAIN.to_owned(),
            agent: DEFAULT_AGENT.to_owned(),
            threads: 0,
            header_timeout_secs: DEFAULT_HEADER_TIMEOUT_SECS,
            keepalive_idle_secs: DEFAULT_KEEPALIVE_IDLE_SECS,
            keepalive_requests: DEFAULT_KEEPALIVE_REQUESTS,
            read_timeout_secs: DEFAULT_READ_TIMEOUT_SECS,
            write_timeout_secs: DEFAULT_WRITE_TIMEOUT_SECS,
            websocket_idle_secs: DEFAULT_WEBSOCKET_IDLE_SECS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            connect_attempts: DEFAULT_CONNECT_ATTEMPTS,
            connect_backoff_ms: DEFAULT_CONNECT_BACKOFF_MS,
            upstream_read_timeout_secs: DEFAULT_UPSTREAM_READ_TIMEOUT_SECS,
            upstream_idle_secs: DEFAULT_UPSTREAM_IDLE_SECS,
            pool_size: DEFAULT_POOL_SIZE,
            upstream_max_in_flight: DEFAULT_UPSTREAM_MAX_IN_FLIGHT,
            grace_period_secs: DEFAULT_GRACE_PERIOD_SECS,
            watch_backoff_ms: DEFAULT_WATCH_BACKOFF_MS,
            watch_backoff_max_ms: DEFAULT_WATCH_BACKOFF_MAX_MS,
            access_log: true,
            denied_ports: Vec::new(),
            fast_path: true,
            upstream_connect: UpstreamConnect::Auto,
            allowed_hosts: Vec::new(),
            agent_key: Secret::default(),
        }
    }
}

/// A configuration value that cannot work, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proxy config `{key}`: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

impl ProxyConfig {
    /// Checks every value; the first bad one is named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_domain(&self.domain)?;
        if !(self.agent.starts_with("http://") || self.agent.starts_with("https://")) {
            return Err(invalid(
                "agent",
                format!("{:?} is not an http:// or https:// URL", self.agent),
            ));
        }
        if self.agent.parse::<http::Uri>().is_err() {
            return Err(invalid(
                "agent",
                format!("{:?} is not a valid URL", self.agent),
            ));
        }
        let positive: [(&'static str, u64); 7] = [
            ("header_timeout_secs", self.header_timeout_secs),
            ("keepalive_idle_secs", self.keepalive_idle_secs),
            ("read_timeout_secs", self.read_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
            ("websocket_idle_secs", self.websocket_idle_secs),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("grace_period_secs", self.grace_period_secs),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.connect_attempts == 0 || self.connect_attempts > 10 {
            return Err(invalid("connect_attempts", "must be between 1 and 10"));
        }
        if self.keepalive_requests == 0 {
            return Err(invalid("keepalive_requests", "must be greater than 0"));
        }
        if self.upstream_max_in_flight == 0 {
            return Err(invalid("upstream_max_in_flight", "must be greater than 0"));
        }
        if self.pool_size == 0 {
            return Err(invalid("pool_size", "must be greater than 0"));
        }
        if self.watch_backoff_ms == 0 || self.watch_backoff_max_ms < self.watch_backoff_ms {
            return Err(invalid(
                "watch_backoff_ms",
                "must be greater than 0 and at most watch_backoff_max_ms",
            ));
        }
        if Some(self.listen) == self.admin_listen && self.listen.port() != 0 {
            return Err(invalid("admin_listen", "must differ from listen"));
        }
        for entry in &self.allowed_hosts {
            crate::hosts::Pattern::parse(entry)
                .map_err(|why| invalid("allowed_hosts", format!("entry {entry:?} {why}")))?;
        }
        Ok(())
    }

    /// Worker threads after resolving 0 to the number of cores.
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    pub(crate) fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }
}

/// A domain is one or more DNS labels of letters, digits and hyphens.
fn validate_domain(domain: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| invalid("domain", format!("{domain:?} {why}"));
    if domain.is_empty() || domain.len() > 253 {
        return Err(bad("must be 1-253 characters"));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("has an empty or over-long label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("may only hold letters, digits, '-' and '.'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("has a label starting or ending with '-'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_addresses() {
        let c = ProxyConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7880");
        assert_eq!(c.admin_listen.unwrap().to_string(), "127.0.0.1:7881");
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.agent, "http://127.0.0.1:7801");
        assert_eq!(c.grace_period_secs, 10);
        assert!(c.worker_threads() >= 1);
    }

    #[test]
    fn unknown_keys_are_rejected_and_missing_keys_default() {
        let c: ProxyConfig = serde_json::from_str(r#"{"domain":"sb.example.com"}"#).unwrap();
        assert_eq!(c.domain, "sb.example.com");
        assert_eq!(c.listen, ProxyConfig::default().listen);
        let err = serde_json::from_str::<ProxyConfig>(r#"{"domian":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `domian`"), "{err}");
    }

    #[test]
    fn the_agent_key_never_comes_from_or_goes_to_a_config_file() {
        let err = serde_json::from_str::<ProxyConfig>(r#"{"agent_key":"k"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `agent_key`"),
            "{err}"
        );
        let c = ProxyConfig {
            agent_key: Secret::new("sekrit"),
            allowed_hosts: vec!["*.example.com".into()],
            ..ProxyConfig::default()
        };
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("sekrit"), "{json}");
        assert!(!json.contains("agent_key"), "{json}");
        assert!(
            json.contains(r#""allowed_hosts":["*.example.com"]"#),
            "{json}"
        );
        assert!(ProxyConfig::default().agent_key.is_empty());
        assert!(!format!("{c:?}").contains("sekrit"));
    }

    #[test]
    fn bad_values_name_their_key() {
        type Edit = fn(&mut ProxyConfig);
        let cases: [(Edit, &str); 9] = [
            (|c| c.domain = "a..b".into(), "domain"),
            (|c| c.domain = "-x.com".into(), "domain"),
            (|c| c.agent = "127.0.0.1:7801".into(), "agent"),
            (|c| c.header_timeout_secs = 0, "header_timeout_secs"),
            (|c| c.connect_attempts = 0, "connect_attempts"),
            (|c| c.admin_listen = Some(c.listen), "admin_listen"),
            (|c| c.watch_backoff_max_ms = 1, "watch_backoff_ms"),
            (|c| c.allowed_hosts = vec!["*".into()], "allowed_hosts"),
            (
                |c| c.allowed_hosts = vec!["ok.test".into(), "bad host".into()],
                "allowed_hosts",
            ),
        ];
        for (edit, key) in cases {
            let mut c = ProxyConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
