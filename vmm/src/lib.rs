//! What a sandbox *is*: the [`Runtime`] trait and its backends (namespace
//! sandboxes, Firecracker microVMs), their network, images and cgroups.
//!
//! This crate knows nothing of gRPC. The host agent (`wrenn-agent`) drives a
//! `Arc<dyn Runtime>` chosen once by [`build`] from [`RuntimeConfig`],
//! and calls [`image`] at start-up ([`image::ensure_image_sizes`], building
//! `base` with [`image::build_base`]) and, through [`Runtime::shutdown`], at
//! shutdown (ShrinkImage).
//!
//! | module | holds |
//! |---|---|
//! | [`runtime`] | the trait, spec/handle types, errors |
//! | `factory` | [`build`]: the backend a config names |
//! | [`slot`] | slots and the addressing plan |
//! | [`net`] | netns, veth, TAP, nftables, resolv.conf |
//! | [`cgroup`] | cgroup v1/v2 limits, freezer, usage |
//! | [`image`] | template images: build, base (debootstrap), busybox, resize, flatten |
//! | [`guestlog`] | a sandbox's console in a capped log |
//! | [`loopdev`] | loop devices with autoclear |
//! | [`sandbox`] | what every backend keeps: a sandbox's directory, record and first process |
//! | [`namespace`] | the namespace backend |
//! | [`firecracker`] | the Firecracker backend and its API client |
// System calls that need `unsafe` live in modules named for them, each
// allowed below: `sys` (the one-off calls), `loopdev`, `net::tap`, and
// `namespace::{caps, rootmount, spawn, userns}`.
#![deny(unsafe_code)]

pub mod cgroup;
mod factory;
pub mod firecracker;
pub mod guestlog;
pub mod image;
#[allow(unsafe_code)]
pub mod loopdev;
pub mod mounts;
pub mod namespace;
pub mod net;
pub mod runtime;
pub mod sandbox;
pub mod slot;
pub mod steps;
#[allow(unsafe_code)]
mod sys;
pub mod validate;

pub use factory::build;
pub use runtime::{
    Backend, ENVD_ACCESS_TOKEN_ENV, Error, Recovered, Result, Runtime, RuntimeConfig,
    SandboxHandle, SandboxMetrics, SandboxSpec, SpawnError,
};
pub use wrenn_types::SandboxId;
