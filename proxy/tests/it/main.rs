//! In-process integration tests: the real proxy (Pingora on its own threads,
//! ephemeral loopback listeners) against real upstream servers and a fake
//! host agent that is a real tonic server.

mod common;

mod fast;
mod hardening;
mod hosts;
mod netns;
mod parity;
mod pool;
mod retry;
mod rewrite;
mod routing;
mod shutdown;
mod watcher;
mod websocket;
