//! What a sandbox *is*: the [`Runtime`] trait and its backends (namespace
//! sandboxes, Firecracker microVMs), their network, images and cgroups.
//!
//! This crate knows nothing of gRPC. The host agent (`wrenn-agent`) drives a
//! `Arc<dyn Runtime>` chosen once by [`runtime::build`] from [`RuntimeConfig`],
//! and calls [`image`] at start-up ([`image::ensure_image_sizes`], building
//! `base` with [`image::build_base`]) and, through [`Runtime::shutdown`], at
//! shutdown (ShrinkImage).
//!
//! | module | holds |
//! |---|---|
//! | [`runtime`] | the trait, spec/handle types, errors, the factory |
//! | [`slot`] | slots and the addressing plan |
//! | [`net`] | netns, veth, TAP, nftables, resolv.conf |
//! | [`cgroup`] | cgroup v1/v2 limits, freezer, usage |
//! | [`image`] | template images: build, base (debootstrap), busybox, resize |
//! | [`guestlog`] | a sandbox's console in a capped log |
//! | [`loopdev`] | loop devices with autoclear |
//! | [`namespace`] | the namespace backend |
//! | [`firecracker`] | the Firecracker backend and its API client |

pub mod cgroup;
pub mod firecracker;
pub mod guestlog;
pub mod image;
pub mod loopdev;
pub mod mounts;
pub mod namespace;
pub mod net;
pub mod runtime;
pub mod slot;
pub mod validate;

pub use runtime::{
    Backend, Error, Recovered, Result, Runtime, RuntimeConfig, SandboxHandle, SandboxMetrics,
    SandboxSpec, build,
};
pub use wrenn_types::SandboxId;
