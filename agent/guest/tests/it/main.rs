//! End-to-end tests of the `wrenn-guest` binary: each test starts the real agent
//! as a child on `127.0.0.1:0` and talks gRPC to it. Run as root (CI is root):
//! tests switch users, create users with `useradd`, and chroot.

mod common;

mod background;
mod bad_input;
mod concurrency;
mod envd;
mod exec;
mod files;
mod forward;
mod lifecycle;
mod pty;
mod template;
