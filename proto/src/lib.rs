//! Generated gRPC types for every wrenn service.
//!
//! - [`process`] and [`filesystem`]: the guest agent's API (`wrenn-guest`), named
//!   after E2B's envd API so an adapter can serve E2B's SDK.
//! - [`wrenn::v1`]: the host agent (`HostAgent`) and the control plane
//!   (`Sandboxes`, `Hosts`).
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

/// Guest process API (`process.Process`).
pub mod process {
    tonic::include_proto!("process");
}

/// Guest filesystem API (`filesystem.Filesystem`).
pub mod filesystem {
    tonic::include_proto!("filesystem");
}

/// wrenn's own services.
pub mod wrenn {
    pub mod v1 {
        tonic::include_proto!("wrenn.v1");
    }
}

pub use wrenn_types::{ByteSize, GUEST_PORT, SandboxId};
