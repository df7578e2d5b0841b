//! Coverage-guided fuzz targets for the parsers that read what browsers,
//! sandbox apps and clients send: one function per target, taking the
//! fuzzer's bytes and panicking when a check fails.
//!
//! | target | code under test |
//! |---|---|
//! | [`route`] | the proxy's router: request target, `Host`, sandbox headers (`proxy/src/target.rs`) |
//! | [`rewrite`] | the proxy's `Location` / `Content-Location` / `Refresh` / `Set-Cookie` rewriter (`proxy/src/rewrite.rs`) |
//! | [`chunked`] | the fast path's chunked-body scanner (`proxy/src/fast/chunked.rs`) |
//! | [`byte_size`] | `ByteSize` parsing and display (`proto/types/src/size.rs`) |
//! | [`guest_path`] | the guest agent's check of paths from RPCs (`agent/guest/src/paths.rs`) |
//!
//! # Design
//! - The checks live here, in a plain library, so `cargo test` runs every
//!   file of `corpus/<target>/` through its target without a fuzzer
//!   (`src/corpus.rs`). The libFuzzer binaries (`fuzz_targets/`) are one
//!   line each and only build with the `libfuzzer` feature, which only
//!   `scripts/fuzz` turns on (with its own profile and coverage flags).
//! - A target checks more than "does not panic": each states properties
//!   the code promises (a rewritten URL routes back to its sandbox, a
//!   chunked body ends at the same byte however it is split, …), checked
//!   against the code itself or against a small model of its grammar.
//! - Inputs are text where the code reads text, so the seeds are readable:
//!   a first line for the context, then `name: value` lines.
//!
//! # Limitations
//! - The guest agent is a binary crate; its `paths.rs` is compiled into this
//!   crate with `#[path]` (see [`guest_path`]), so the guest itself is unchanged.
//! - No sanitizers: they need a nightly compiler. The code under test has no
//!   `unsafe`, so a sanitizer would add little; debug assertions and
//!   overflow checks are on in the fuzz profile.
#![forbid(unsafe_code)]

mod byte_size;
mod chunked;
mod guest_path;
mod input;
mod rewrite;
mod route;

pub use byte_size::byte_size;
pub use chunked::chunked;
pub use guest_path::guest_path;
pub use rewrite::rewrite;
pub use route::route;

/// A fuzz target: panics when its input breaks a check.
pub type Target = fn(&[u8]);

/// Every target by name, as `scripts/fuzz`, `fuzz_targets/` and `corpus/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("route", route),
    ("rewrite", rewrite),
    ("chunked", chunked),
    ("byte_size", byte_size),
    ("guest_path", guest_path),
];

#[cfg(test)]
mod corpus;
