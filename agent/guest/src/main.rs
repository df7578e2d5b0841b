//! `wrenn-guest`: the agent that runs as PID 1 inside every sandbox and serves the
//! envd-compatible `process.Process` and `filesystem.Filesystem` gRPC APIs (plus
//! `grpc.health.v1.Health`) on port 49983.
//!
//! The binary is built static (`--target x86_64-unknown-linux-musl`) so it runs in
//! any root filesystem, a busybox-only one included. See `README.md` next to this
//! crate for the flags, the design and the benchmark numbers.
// System calls that need `unsafe` live in `sys`; the one other block is
// the `pre_exec` hook in `process/spawn.rs`.
#![deny(unsafe_code)]

mod assign;
mod config;
mod env;
mod envd;
mod forward;
mod fs;
mod init;
mod logging;
mod paths;
mod process;
mod reaper;
mod server;
mod shutdown;
mod stream;
#[allow(unsafe_code)]
mod sys;
mod template;
mod users;
mod wire;

use anyhow::Context as _;
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    // Captured before anything else runs: every process inherits this, minus our
    // own `WRENN_GUEST_*` settings.
    let base_env = env::BaseEnv::capture();
    logging::init(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wrenn-guest")
        .build()
        .context("building the tokio runtime")?;
    let result = runtime.block_on(server::run(config, base_env));
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "wrenn-guest failed");
    }
    // Exit without waiting for blocking tasks (file transfers, watches) still
    // parked on dead clients: the processes have already been stopped.
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}
