//! Command-line flags. Every flag can also be given in the environment as
//! `WRENN_GUEST_<FLAG>`; those variables are not passed on to processes.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Default listen address: every interface, the guest port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:49983";
/// Default interval of `keepalive` events on idle streams.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 30;
/// Prefix of the environment variables that configure the agent itself.
pub const ENV_PREFIX: &str = "WRENN_GUEST_";
/// Default interval of the localhost forwarder's scans.
pub const DEFAULT_FORWARD_SCAN_MS: u64 = 100;

/// Guest agent: process, PTY and filesystem gRPC inside a sandbox.
#[derive(Debug, Clone, Parser)]
#[command(name = "wrenn-guest", version)]
pub struct Config {
    /// Address to serve gRPC on. Use port 0 for an ephemeral port (with --print-addr).
    #[arg(long, env = "WRENN_GUEST_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Seconds between `keepalive` events on idle streams.
    #[arg(
        long,
        env = "WRENN_GUEST_KEEPALIVE_SECS",
        default_value_t = DEFAULT_KEEPALIVE_SECS,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub keepalive_secs: u64,

    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// `tracing` directives such as `wrenn_guest=debug`. Logs go to stderr.
    #[arg(long, env = "WRENN_GUEST_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format on stderr.
    #[arg(long, env = "WRENN_GUEST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Once serving, print the bound address as one line `<ip>:<port>` on stdout.
    #[arg(long, env = "WRENN_GUEST_PRINT_ADDR")]
    pub print_addr: bool,

    /// Make apps that listen only on loopback (127.0.0.1, ::1) reachable on
    /// the sandbox's own address, same port (Firecracker guests turn it on).
    /// The environment takes 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        env = "WRENN_GUEST_FORWARD_LOCALHOST",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub forward_localhost: bool,

    /// A file holding the credential every call but health checks must
    /// present (`authorization: Bearer <token>`); the runtime writes it
    /// readable by the sandbox's root only. Without it, calls need none.
    #[arg(long, env = "WRENN_GUEST_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// The token envd-compatible HTTP clients (E2B's SDKs) present as
    /// `X-Access-Token`; without it (and until `Assign` gives one) those
    /// calls are refused. gRPC calls use `--token-file` instead.
    #[arg(long, env = "WRENN_GUEST_ENVD_ACCESS_TOKEN", hide_env_values = true)]
    pub envd_access_token: Option<String>,

    /// Accept connections only from these addresses (the host's end of the
    /// sandbox's link): processes inside the sandbox cannot reach the agent.
    /// Repeatable; without it, every peer is accepted.
    #[arg(long, env = "WRENN_GUEST_ALLOW_PEER", value_delimiter = ',')]
    pub allow_peer: Vec<std::net::IpAddr>,

    /// Milliseconds between the forwarder's scans for loopback listeners.
    #[arg(
        long,
        env = "WRENN_GUEST_FORWARD_SCAN_MS",
        default_value_t = DEFAULT_FORWARD_SCAN_MS,
        value_parser = clap::value_parser!(u64).range(10..=200)
    )]
    pub forward_scan_ms: u64,

    /// The template's defaults for this sandbox (user, workdir, env, START,
    /// READY), written into the image by a template build; none when absent.
    #[arg(
        long,
        env = "WRENN_GUEST_TEMPLATE_FILE",
        default_value = crate::template::DEFAULT_FILE
    )]
    pub template_file: std::path::PathBuf,

    /// Ignore the template file: a template build's own sandboxes, which
    /// must not start the app of the template they are built from.
    #[arg(
        long,
        env = "WRENN_GUEST_NO_TEMPLATE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_template: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `key=value` fields, one event per line.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Interval of `keepalive` events on idle streams.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }

    /// Interval of the localhost forwarder's scans.
    pub fn forward_scan(&self) -> Duration {
        Duration::from_millis(self.forward_scan_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_contract() {
        let config = Config::try_parse_from(["wrenn-guest"]).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.keepalive(), Duration::from_secs(30));
        assert_eq!(config.log_level, "info");
        assert!(!config.print_addr);
        assert!(
            !config.forward_localhost,
            "off unless the runtime turns it on"
        );
        assert_eq!(config.forward_scan(), Duration::from_millis(100));
        assert!(config.token_file.is_none() && config.allow_peer.is_empty());
        assert!(
            !config.no_template,
            "template defaults apply unless turned off"
        );
        assert_eq!(
            config.template_file,
            std::path::Path::new("/etc/wrenn/template.json")
        );
    }

    #[test]
    fn credential_and_peer_flags() {
        let c = Config::try_parse_from([
            "wrenn-guest",
            "--token-file",
            "/run/wrenn/token",
            "--allow-peer",
            "10.210.0.2,10.210.0.4",
        ])
        .unwrap();
        assert_eq!(
            c.token_file.unwrap(),
            std::path::Path::new("/run/wrenn/token")
        );
        assert_eq!(
            c.allow_peer,
            [
                "10.210.0.2".parse::<std::net::IpAddr>().unwrap(),
                "10.210.0.4".parse().unwrap()
            ]
        );
        let e = Config::try_parse_from(["wrenn-guest", "--allow-peer", "nope"]).unwrap_err();
        assert!(e.to_string().contains("allow-peer"), "{e}");
    }

    #[test]
    fn forwarder_flags_and_their_bounds() {
        let c = Config::try_parse_from([
            "wrenn-guest",
            "--forward-localhost",
            "--forward-scan-ms",
            "200",
        ])
        .unwrap();
        assert!(c.forward_localhost);
        assert_eq!(c.forward_scan(), Duration::from_millis(200));
        for bad in ["0", "9", "201"] {
            let err =
                Config::try_parse_from(["wrenn-guest", "--forward-scan-ms", bad]).unwrap_err();
            assert!(err.to_string().contains("forward-scan-ms"), "{err}");
        }
    }

    #[test]
    fn flags_are_parsed() {
        let config = Config::try_parse_from([
            "wrenn-guest",
            "--listen",
            "127.0.0.1:0",
            "--keepalive-secs",
            "5",
            "--print-addr",
            "--log-format",
            "json",
            "--template-file",
            "/tmp/t.json",
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.keepalive_secs, 5);
        assert!(config.print_addr);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.template_file, std::path::Path::new("/tmp/t.json"));
    }

    #[test]
    fn zero_keepalive_is_rejected() {
        let err = Config::try_parse_from(["wrenn-guest", "--keepalive-secs", "0"]).unwrap_err();
        assert!(err.to_string().contains("keepalive-secs"), "{err}");
    }
}
