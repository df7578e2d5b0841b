//! Generated gRPC types for every wrenn service.
//!
//! - [`process`] and [`filesystem`]: the guest agent's API (`wrenn-guest`), named
//!   after E2B's envd API so an adapter can serve E2B's SDK.
//! - [`wrenn::v1`]: the host agent (`HostAgent`), the guest's own `Guest` and the control plane
//!   (`Sandboxes`, `Hosts`).
//! - [`auth`]: the bearer credentials wrenn's processes present to each other.
//! - [`serve`]: the listener of wrenn's servers, with header and idle timeouts.
//! - `fake_agent` (feature `test-support`): a scriptable fake `HostAgent`
//!   server for tests and benchmarks.
#![forbid(unsafe_code)]

pub mod auth;
#[cfg(feature = "test-support")]
pub mod fake_agent;
pub mod serve;

/// Guest process API (`process.Process`).
#[allow(clippy::all, missing_docs)]
pub mod process {
    tonic::include_proto!("process");
}

/// Guest filesystem API (`filesystem.Filesystem`).
#[allow(clippy::all, missing_docs)]
pub mod filesystem {
    tonic::include_proto!("filesystem");
}

/// wrenn's own services.
#[allow(clippy::all, missing_docs)]
pub mod wrenn {
    pub mod v1 {
        tonic::include_proto!("wrenn.v1");
    }
}

/// Every message and service above as an encoded
/// `google.protobuf.FileDescriptorSet` (with `google/protobuf/timestamp.proto`),
/// for reflection: the proto3 JSON mapping of the guest's Connect interface.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub use wrenn_types::{ByteSize, GUEST_PORT, SandboxId};
