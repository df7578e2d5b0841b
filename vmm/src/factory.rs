//! The factory: one `Arc<dyn Runtime>` from a [`RuntimeConfig`].

use std::sync::Arc;

use crate::runtime::{Backend, Result, Runtime, RuntimeConfig};

/// The factory: the backend `config.backend` names, checked against this
/// host. `Namespace` needs root, cgroups and the guest binary; `Firecracker`
/// additionally needs the binary, a usable `/dev/kvm` and a kernel — when one
/// is missing the error says which and suggests the namespace backend.
pub fn build(config: RuntimeConfig) -> Result<Arc<dyn Runtime>> {
    crate::validate::config(&config)?;
    match config.backend {
        Backend::Namespace => Ok(Arc::new(crate::namespace::NamespaceRuntime::new(config)?)),
        Backend::Firecracker => Ok(Arc::new(crate::firecracker::FirecrackerRuntime::new(
            config,
        )?)),
    }
}
