//! The namespace runtime the `runtime` and `forward` scenarios drive
//! directly (no `wrenn up`), each with its own directory, prefix and slots.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use wrenn_vmm::{Backend, RuntimeConfig};

/// A namespace runtime in `dir` with the workspace's static guest.
pub fn config(
    dir: &str,
    prefix: &str,
    slots: RangeInclusive<u16>,
) -> anyhow::Result<RuntimeConfig> {
    Ok(RuntimeConfig {
        backend: Backend::Namespace,
        dir: PathBuf::from(dir),
        prefix: prefix.into(),
        slots,
        guest_bin: crate::paths::guest_bin()?,
        firecracker_bin: PathBuf::from(RuntimeConfig::DEFAULT_FIRECRACKER_BIN),
        kernel: None,
        unhardened: false,
    })
}

/// Adopt-or-clean whatever an earlier (killed) run left, then destroy it.
pub async fn clean(cfg: &RuntimeConfig) -> anyhow::Result<()> {
    if !cfg.dir.exists() {
        return Ok(());
    }
    let runtime = wrenn_vmm::build(cfg.clone())?;
    for h in runtime.recover().await?.adopted {
        runtime.destroy(&h.id).await?;
    }
    runtime.shutdown(Duration::from_secs(30)).await?;
    Ok(())
}
