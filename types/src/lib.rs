//! Identifier and value types shared by every wrenn crate, with their parsing
//! and validation in one place. No gRPC here: `wrenn-vmm` depends on this crate
//! and knows nothing of the wire.
#![forbid(unsafe_code)]

mod chain;
mod cidr;
mod id;
pub mod recipe;
mod size;
pub mod spec;

pub use chain::{Chain, chain};
pub use cidr::{Cidr, InvalidCidr};
pub use id::{InvalidSandboxId, SandboxId};
pub use size::{ByteSize, InvalidByteSize};

/// Most bytes a sandbox's environment and metadata may hold together (every
/// key and value): what a create carries to the host and what the sandbox's
/// record keeps.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Most networks in a sandbox's egress allow list, and in its deny list.
pub const MAX_EGRESS_RULES: usize = 64;

/// TCP port the guest agent listens on inside every sandbox.
pub const GUEST_PORT: u16 = 49983;

/// Bytes of a sandbox's environment and metadata as [`MAX_SPEC_BYTES`]
/// counts them: every key and value.
pub fn spec_bytes<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    entries.into_iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The spec-size check every layer makes (control plane, host agent,
/// runtime), with the message they all give.
pub fn check_spec_bytes<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    let bytes = spec_bytes(entries);
    if bytes > MAX_SPEC_BYTES {
        return Err(format!(
            "env and metadata hold {bytes} bytes together, above the cap of {MAX_SPEC_BYTES} bytes"
        ));
    }
    Ok(())
}
