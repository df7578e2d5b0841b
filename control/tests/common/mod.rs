//! Shared by the integration test binaries.
#![allow(dead_code)]

pub mod pg;
