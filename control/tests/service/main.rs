//! In-process tests of the control plane's services: a real control plane
//! (tonic services, SQLite store, auth, relays, reconciler) on an ephemeral
//! loopback port, in front of a fake `HostAgent` tonic server.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod e2b;
mod extension;
mod keys;
mod lifecycle;
mod limits;
mod reconcile;
mod relay;
mod startup;
mod watch;
