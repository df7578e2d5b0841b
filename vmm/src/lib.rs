//! What a sandbox *is*: the [`Runtime`] trait and its backends (namespace
//! sandboxes, Firecracker microVMs), their network, images and cgroups.
//!
//! This crate knows nothing of gRPC. The host agent (`wrenn-agent`) drives a
//! `Arc<dyn Runtime>` chosen once by [`runtime::build`] from [`RuntimeConfig`].

pub mod runtime;

pub use runtime::{
    Backend, Error, Recovered, Result, Runtime, RuntimeConfig, SandboxHandle, SandboxMetrics,
    SandboxSpec,
};
pub use wrenn_types::SandboxId;
