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
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.keepalive_secs, 5);
        assert!(config.print_addr);
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn zero_keepalive_is_rejected() {
        let err = Config::try_parse_from(["wrenn-guest", "--keepalive-secs", "0"]).unwrap_err();
        assert!(err.to_string().contains("keepalive-secs"), "{err}");
    }
}
