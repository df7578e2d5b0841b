//! `wrenn-agent`: the host agent. It owns the sandboxes of one host and serves
//! the `wrenn.v1.HostAgent` gRPC service that the control plane calls and the
//! proxy watches.
//!
//! - [`manager`]: the live sandbox map, admission, lifecycle events, the TTL
//!   reaper.
//! - [`service`]: the tonic service; interactive calls are relayed to each
//!   sandbox's guest agent over that sandbox's own channel ([`guest`]).
//! - [`run`]: start-up (images, adopt-or-clean, serve) and graceful shutdown.
//!
//! `wrenn agent` (in `cli/`) is a thin wrapper around [`run`].
#![forbid(unsafe_code)]

pub mod build;
pub mod config;
pub mod error;
pub mod guest;
pub mod guest_bin;
pub mod manager;
mod server;
pub mod service;
pub mod spec;
mod startup;

pub use config::{AgentConfig, RuntimeSettings};
pub use error::{Error, SandboxError};
pub use server::Agent;
pub use service::UPLOAD_SIZE_HEADER;
pub use startup::{Progress, destroy_leftovers, run, run_with_progress, start};
