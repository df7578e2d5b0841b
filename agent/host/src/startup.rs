//! `run`: build the runtime from the configuration, prepare images, serve
//! until the shutdown trigger, shut down gracefully.

use std::future::Future;
use std::sync::Arc;

use tracing::info;
use wrenn_vmm::{Runtime, RuntimeConfig};

use crate::config::AgentConfig;
use crate::error::Error;
use crate::server::Agent;

/// Start-up progress, for a progress bar in the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A start-up step began.
    Step(&'static str),
}

/// Runs the agent until `shutdown` resolves, then shuts it down gracefully.
/// Progress is logged.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_with_progress(config, |p| info!(progress = ?p, "start-up"), shutdown).await
}

/// [`run`], reporting start-up progress (the `base` image build) to
/// `progress`.
pub async fn run_with_progress(
    config: AgentConfig,
    progress: impl Fn(Progress) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let agent = start(config, progress).await?;
    shutdown.await;
    agent.shutdown().await
}

/// Start-up without the wait: runtime, images, adopt-or-clean, serving.
pub async fn start(
    config: AgentConfig,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<Agent, Error> {
    std::fs::create_dir_all(&config.dir).map_err(|source| Error::CreateDir {
        path: config.dir.clone(),
        source,
    })?;
    let guest_bin = crate::guest_bin::resolve(config.runtime.guest_bin.as_deref())?;
    let rc = config.runtime_config(guest_bin);
    progress(Progress::Step("runtime"));
    let runtime = build_runtime(&rc)?;
    prepare_images(&config, &rc, &progress).await?;
    Agent::start_with_runtime(&config, runtime).await
}

fn build_runtime(rc: &RuntimeConfig) -> Result<Arc<dyn Runtime>, Error> {
    Err(Error::Startup {
        step: "build runtime",
        source: format!("no {:?} runtime in this build of wrenn-vmm", rc.backend).into(),
    })
}

async fn prepare_images(
    _config: &AgentConfig,
    _rc: &RuntimeConfig,
    progress: &(impl Fn(Progress) + Send + Sync),
) -> Result<(), Error> {
    progress(Progress::Step("images"));
    Ok(())
}
