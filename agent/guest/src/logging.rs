//! Structured logs on stderr (`key=value` text or JSON lines).
//!
//! In a sandbox stderr is the console pipe the host agent drains; while no
//! agent reads it (an agent restart) a write fails with `EPIPE`. The line
//! is then dropped: tracing-subscriber's default would report the failure
//! with `eprintln!`, which panics when stderr is broken, and a panicking
//! PID 1 takes the whole sandbox with it.

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. Fails on a malformed `--log-level`.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("--log-level {:?} is not a valid filter", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .log_internal_errors(false);
    match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|err| anyhow::anyhow!("installing the log subscriber: {err}"))
}
