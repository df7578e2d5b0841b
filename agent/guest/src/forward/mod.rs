//! The localhost forwarder: apps that listen only on the sandbox's loopback
//! (`127.0.0.1`, `::1`) become reachable on the sandbox's own address, on the
//! same port, with no `socat` (`--forward-localhost`).
//!
//! # Design
//! - **Detection.** Every `--forward-scan-ms` (100 ms) the forwarder asks the
//!   kernel for the listening TCP sockets ([`diag`]: `sock_diag` netlink,
//!   which walks only the listening hash, two round trips per scan; or
//!   [`procfs`] where the guest kernel lacks `sock_diag`). [`plan`] picks the
//!   ports whose every listener is on loopback; the guest agent's own port is
//!   never one of them.
//! - **Forwarding.** For each such port a [`relay::Forward`] listens on the
//!   sandbox's non-loopback IPv4 addresses and relays each connection to the
//!   app's loopback address with `copy_bidirectional` (32 KiB buffers, no
//!   delay) in this process's runtime.
//! - **Stopping.** While anything is forwarded the forwarder also follows the
//!   kernel's destroy notices for listening sockets ([`listeners::Destroyed`]), so
//!   when an app closes its listener the forward's listeners are closed within
//!   milliseconds rather than at the next scan; the scan stays as the backstop.
//! - **No fight over ports.** The forwarder never binds a port on which
//!   anything but loopback listens, and a failed bind (`EADDRINUSE`: an app
//!   took the address or the wildcard first) is left alone and retried only
//!   after [`RETRY_AFTER`]. The dangerous window is the other way round: the
//!   forwarder still holding `sandbox_addr:port` when the loopback app stopped
//!   and a new app wants `0.0.0.0:port`. The destroy notices shrink that
//!   window from up to one scan interval to about a millisecond, well below
//!   the start-up time of any server process. Connections relayed earlier do
//!   not block the new app (they are not listening, and servers set
//!   `SO_REUSEADDR`).
//!
//! Namespace sandboxes do not need it (the proxy opens sockets inside their
//! netns: see `wrenn_proxy::netns`), so it is off unless the runtime turns it
//! on; Firecracker guests get `WRENN_GUEST_FORWARD_LOCALHOST=1` on their kernel
//! command line. Off, it costs nothing; on and idle, one scan per interval.
//!
//! # Limitations
//! - Detection is polled: a new loopback listener is forwarded within one
//!   scan interval (the proxy's connect retry covers that gap).
//! - IPv4 only on the sandbox side; an IPv6-only wildcard listener
//!   (`[::]` with `IPV6_V6ONLY`) counts as reachable and is not forwarded.
//! - Addresses are read when a forward starts; an address added later is
//!   served by forwards started after it.
//! - Apps see forwarded connections coming from loopback.

pub mod listeners;
pub mod plan;
pub mod procfs;
pub mod relay;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use listeners::{Destroyed, Diag};
use relay::Forward;

/// How long a port whose forward could not start is left alone.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// What the forwarder needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often listening sockets are scanned.
    pub scan: Duration,
    /// Ports never forwarded (the guest agent's own).
    pub excluded: Vec<u16>,
}

/// The running forwarder; [`Forwarder::stop`] closes every forward.
#[derive(Debug)]
pub struct Forwarder {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Forwarder {
    pub fn spawn(settings: Settings) -> Forwarder {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(settings, stopped));
        Forwarder { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Where listening sockets are read from.
enum Source {
    Diag(Diag),
    Procfs,
}

impl Source {
    fn open() -> Source {
        match Diag::open().and_then(|mut d| d.listeners().map(|_| d)) {
            Ok(d) => Source::Diag(d),
            Err(e) => {
                tracing::info!(error = %e, "sock_diag unavailable; scanning /proc/net/tcp instead");
                Source::Procfs
            }
        }
    }

    fn listeners(&mut self) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            Source::Diag(d) => d.listeners(),
            Source::Procfs => procfs::listeners(),
        }
    }
}

struct State {
    settings: Settings,
    forwards: BTreeMap<u16, Forward>,
    /// Port → (target, when) of forwards that could not start.
    refused: BTreeMap<u16, (SocketAddr, Instant)>,
}

async fn run(settings: Settings, mut stopped: watch::Receiver<bool>) {
    let mut source = Source::open();
    let mut tick = tokio::time::interval(settings.scan);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        scan_ms = settings.scan.as_millis() as u64,
        excluded = ?settings.excluded,
        "forwarding localhost-only ports"
    );
    let mut state = State {
        settings,
        forwards: BTreeMap::new(),
        refused: BTreeMap::new(),
    };
    let mut destroyed: Option<Destroyed> = None;
    let mut scan_failed = false;
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
            r = next_destroyed(&mut destroyed) => if let Err(e) = r {
                tracing::warn!(error = %e, "lost the socket destroy notices; relying on the scan");
                destroyed = None;
            },
        }
        let listeners = match source.listeners() {
            Ok(l) => {
                scan_failed = false;
                l
            }
            Err(e) => {
                if !scan_failed {
                    tracing::warn!(error = %e, "scanning listening sockets failed");
                }
                scan_failed = true;
                continue;
            }
        };
        state.apply(&listeners).await;
        if state.forwards.is_empty() {
            destroyed = None;
        } else if destroyed.is_none() && matches!(source, Source::Diag(_)) {
            destroyed = Destroyed::subscribe()
                .inspect_err(|e| tracing::debug!(error = %e, "no socket destroy notices"))
                .ok();
        }
    }
    for (_, f) in std::mem::take(&mut state.forwards) {
        f.stop().await;
    }
}

/// The next destroy notice, or never when not subscribed.
async fn next_destroyed(d: &mut Option<Destroyed>) -> std::io::Result<()> {
    match d {
        Some(d) => d.next().await.map(drop),
        None => std::future::pending().await,
    }
}

impl State {
    /// Stops forwards that are no longer wanted, then starts missing ones.
    async fn apply(&mut self, listeners: &[SocketAddr]) {
        let ours: Vec<SocketAddr> = self
            .forwards
            .values()
            .flat_map(|f| f.bound.iter().copied())
            .collect();
        let want = plan::plan(listeners, &ours, &self.settings.excluded);
        let stale: Vec<u16> = self
            .forwards
            .iter()
            .filter(|(port, f)| want.get(port) != Some(&f.target))
            .map(|(port, _)| *port)
            .collect();
        for port in stale {
            if let Some(f) = self.forwards.remove(&port) {
                let target = f.target;
                f.stop().await;
                tracing::info!(port, %target, "stopped forwarding");
            }
        }
        let now = Instant::now();
        self.refused
            .retain(|port, (target, at)| want.get(port) == Some(target) && now - *at < RETRY_AFTER);
        for (port, target) in want {
            if self.forwards.contains_key(&port) || self.refused.contains_key(&port) {
                continue;
            }
            match Forward::start(port, target, &relay::sandbox_addrs()) {
                Ok(f) => {
                    tracing::info!(port, %target, on = ?f.bound, "forwarding localhost-only port");
                    self.forwards.insert(port, f);
                }
                Err(e) => {
                    if e.in_use() || matches!(e, relay::ForwardError::NoAddress) {
                        tracing::debug!(port, error = %e, "port taken by another listener; not forwarded");
                    } else {
                        tracing::warn!(port, error = %e, "cannot forward port");
                    }
                    self.refused.insert(port, (target, now));
                }
            }
        }
    }
}
