//! End-to-end tests of the `wrenn` binary (issue 4 §7, issue 5 §13): the
//! real `wrenn up` (or its components as separate processes), real namespace
//! sandboxes with the real guest, driven through the CLI as a person would.
//!
//! Needs root, the static guest (`cargo build --release -p wrenn-guest
//! --target x86_64-unknown-linux-musl`), and for the PostgreSQL half
//! `WRENN_TEST_DATABASE_URL` (`scripts/postgres start`). Run with
//! `cargo test -p wrenn-cli --release --test e2e`.
//!
//! Prefix `wrenn-te`; slots: 3000–3099 the shared SQLite platform,
//! 3100–3199 the shared PostgreSQL platform, 3200–3299 the restart tests,
//! 3300–3399 the harness's own tests.

#[path = "../common/mod.rs"]
mod common;

mod harness;
