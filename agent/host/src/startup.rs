//! `run`: bind, build the runtime from the configuration, prepare the images,
//! serve until the shutdown trigger, shut down gracefully.
//!
//! Start-up order: bind the listener first (a taken port fails before
//! anything is touched); build the runtime (`wrenn_vmm::build`); build the
//! `base` template if it is missing, reporting progress; EnsureImageSizes
//! (after the base build, so a fresh `base` is grown too); then
//! `Runtime::recover` (adopt or clean) and serve.

use std::future::Future;
use std::sync::Arc;

use tracing::info;
use wrenn_vmm::image::{self, BuildProgress, ResizeOutcome};
use wrenn_vmm::{Runtime, RuntimeConfig};

use crate::config::AgentConfig;
use crate::error::Error;
use crate::server::Agent;

/// Start-up progress, for the CLI's progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A start-up step began (`"runtime"`, `"base image"`, `"image sizes"`,
    /// `"recover"`).
    Step(&'static str),
    /// The `base` template build: step, fraction of the whole (0..=1, never
    /// decreasing) and a message.
    BaseImage(BuildProgress),
    /// The agent serves on this address.
    Serving(std::net::SocketAddr),
}

/// Runs the agent until `shutdown` resolves, then shuts it down gracefully.
/// Progress is logged.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_with_progress(config, log_progress, shutdown).await
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

fn log_progress(p: Progress) {
    match p {
        Progress::Step(step) => info!(step, "start-up"),
        Progress::BaseImage(b) => {
            info!(step = ?b.step, percent = (b.fraction * 100.0) as u32, message = %b.message, "base image")
        }
        Progress::Serving(addr) => info!(%addr, "serving"),
    }
}

/// Start-up without the wait: the returned [`Agent`] serves until
/// [`Agent::shutdown`].
pub async fn start(
    config: AgentConfig,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<Agent, Error> {
    crate::server::validate(&config)?;
    let listener = crate::server::bind(config.listen).await?;
    wrenn_proto::auth::private_dir(&config.dir).map_err(|source| Error::CreateDir {
        path: config.dir.clone(),
        source,
    })?;
    let guest_bin = crate::guest_bin::resolve(config.runtime.guest_bin.as_deref())?;
    let rc = config.runtime_config(guest_bin);
    let progress = Arc::new(progress);

    progress(Progress::Step("runtime"));
    let runtime = wrenn_vmm::build(rc.clone()).map_err(|e| Error::Startup {
        step: "build runtime",
        source: Box::new(e),
    })?;
    prepare_images(&config, &rc, progress.clone()).await?;
    progress(Progress::Step("recover"));
    let agent = Agent::serve(&config, runtime as Arc<dyn Runtime>, listener).await?;
    progress(Progress::Serving(agent.local_addr()));
    Ok(agent)
}

/// Destroys every sandbox an earlier agent over `config` left running
/// (adopt-or-clean, then destroy what was adopted) and returns their ids.
/// For `wrenn up` when the agent keeps dying: the platform stops, and stops
/// as Ctrl-C would, leaving nothing behind.
pub async fn destroy_leftovers(config: AgentConfig) -> Result<Vec<wrenn_types::SandboxId>, Error> {
    crate::server::validate(&config)?;
    let guest_bin = crate::guest_bin::resolve(config.runtime.guest_bin.as_deref())?;
    let runtime =
        wrenn_vmm::build(config.runtime_config(guest_bin)).map_err(|e| Error::Startup {
            step: "build runtime",
            source: Box::new(e),
        })?;
    let recovered = runtime.recover().await.map_err(|e| Error::Startup {
        step: "recover sandboxes of a previous run",
        source: Box::new(e),
    })?;
    let mut gone = recovered.cleaned;
    for h in recovered.adopted {
        match runtime.destroy(&h.id).await {
            Ok(()) => gone.push(h.id),
            Err(e) => {
                tracing::warn!(sandbox_id = %h.id, error = %crate::error::chain(&e), "destroying a left-over sandbox")
            }
        }
    }
    if let Err(e) = runtime.shutdown(config.shutdown_timeout()).await {
        tracing::warn!(error = %crate::error::chain(&e), "runtime shutdown");
    }
    Ok(gone)
}

/// Builds `base` if asked and missing, then grows every image to the default
/// size. Both block (debootstrap, e2fsprogs): they run on the blocking pool.
async fn prepare_images(
    config: &AgentConfig,
    rc: &RuntimeConfig,
    progress: Arc<impl Fn(Progress) + Send + Sync + 'static>,
) -> Result<(), Error> {
    let dir = rc.dir.clone();
    if config.build_base_image {
        progress(Progress::Step("base image"));
        let (d, p) = (dir.clone(), progress.clone());
        blocking("build the base image", move || {
            image::build_base(&d, &mut |b: &BuildProgress| {
                p(Progress::BaseImage(b.clone()))
            })
        })
        .await?;
    }
    progress(Progress::Step("image sizes"));
    let resized = blocking("ensure image sizes", move || {
        image::ensure_image_sizes(&dir)
    })
    .await?;
    for (template, outcome) in resized {
        if let ResizeOutcome::Resized { from, to } = outcome {
            info!(template, from, to, "grew template image");
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    step: &'static str,
    f: impl FnOnce() -> Result<T, image::Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Startup {
            step,
            source: Box::new(e),
        })?
        .map_err(|e| Error::Startup {
            step,
            source: Box::new(e),
        })
}
