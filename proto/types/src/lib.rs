//! Identifier and value types shared by every wrenn crate, with their parsing
//! and validation in one place. No gRPC here: `wrenn-vmm` depends on this crate
//! and knows nothing of the wire.
#![forbid(unsafe_code)]

mod id;
mod size;

pub use id::{InvalidSandboxId, SandboxId};
pub use size::{ByteSize, InvalidByteSize};

/// TCP port the guest agent listens on inside every sandbox.
pub const GUEST_PORT: u16 = 49983;
