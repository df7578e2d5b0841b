//! Harness of the in-process tests: a fake agent (real tonic server), the real
//! proxy on its own threads with ephemeral loopback listeners, real upstream
//! servers and a real HTTP client. Everything listens on 127.0.0.1 only.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod upstream;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wrenn_proto::wrenn::v1::SandboxState;
use wrenn_proto::wrenn::v1::sandbox_event::Kind;
use wrenn_proxy::{Proxy, ProxyConfig, ProxyHandle, RouteState};

pub use client::{Conn, get};
pub use upstream::Upstream;
pub use wrenn_proto::fake_agent::{FakeAgent, sandbox};

/// A loopback port nothing listens on right now, below the kernel's
/// ephemeral range (32768 and up here): a port from `bind(…:0)` can be
/// taken meanwhile as the source port of any outgoing connection, and a
/// test that binds it again later then fails with `AddrInUse`.
pub fn unused_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 1000) as u16 * 10;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 2_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A listener on port 49983 (the envd port) of a loopback address of its
/// own (`n` tells the tests apart, the process id runs side by side), and
/// that address, to announce a sandbox at.
pub async fn envd_listener(n: u8) -> (tokio::net::TcpListener, String) {
    let ip = std::net::Ipv4Addr::new(127, 1 + (std::process::id() % 200) as u8, 49, n);
    let listener = tokio::net::TcpListener::bind((ip, wrenn_types::GUEST_PORT))
        .await
        .unwrap_or_else(|e| panic!("binding {ip}:49983: {e}"));
    (listener, ip.to_string())
}

/// The echo upstream on [`envd_listener`] `n`, and its address.
pub async fn envd_upstream(n: u8) -> (Upstream, String) {
    let (listener, addr) = envd_listener(n).await;
    (Upstream::http_on(listener), addr)
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The test defaults: ephemeral loopback ports, two threads, this fake agent.
pub fn config(agent: &FakeAgent) -> ProxyConfig {
    config_for(agent.url())
}

pub fn config_for(agent: String) -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        agent,
        threads: 2,
        grace_period_secs: 5,
        fast_path: fast_path(),
        ..ProxyConfig::default()
    }
}

/// `WRENN_TEST_FAST_PATH=off` runs the suite with the fast path off (every
/// request through Pingora's hooks); `scripts/test` runs it both ways.
/// Tests about the fast path itself set it explicitly.
pub fn fast_path() -> bool {
    match std::env::var("WRENN_TEST_FAST_PATH").as_deref() {
        Err(_) | Ok("on") => true,
        Ok("off") => false,
        Ok(other) => panic!("WRENN_TEST_FAST_PATH={other:?}: expected on or off"),
    }
}

pub struct Harness {
    pub agent: FakeAgent,
    pub proxy: ProxyHandle,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Starts the agent and a proxy (config adjusted by `adjust`), and waits
    /// until the proxy has synced its routes.
    pub async fn start_with(adjust: impl FnOnce(&mut ProxyConfig)) -> Harness {
        let agent = FakeAgent::start().await;
        let mut c = config(&agent);
        adjust(&mut c);
        let proxy = Proxy::new(c).start().expect("proxy starts");
        let routes = proxy.routes().clone();
        wait_until("the first route sync", Duration::from_secs(10), || {
            routes.is_synced()
        })
        .await;
        Harness { agent, proxy }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.listen_addr()
    }

    pub fn admin(&self) -> SocketAddr {
        self.proxy.admin_addr().unwrap()
    }

    /// Announces a sandbox at `address` and waits until the proxy routes it.
    pub async fn announce(&self, id: &str, address: &str, state: SandboxState, generation: u64) {
        let kind = match state {
            SandboxState::Paused => Kind::Paused,
            SandboxState::Starting => Kind::Created,
            _ => Kind::Running,
        };
        self.agent
            .emit(kind, sandbox(id, address, state, generation));
        let want = match state {
            SandboxState::Paused => RouteState::Paused,
            SandboxState::Starting => RouteState::Starting,
            _ => RouteState::Running,
        };
        let routes = self.proxy.routes().clone();
        wait_until(
            &format!("route {id} gen {generation}"),
            Duration::from_secs(5),
            || {
                routes
                    .get(id)
                    .is_some_and(|r| r.generation == generation && r.state == want)
            },
        )
        .await;
    }

    /// A running sandbox on loopback.
    pub async fn running(&self, id: &str, generation: u64) {
        self.announce(id, "127.0.0.1", SandboxState::Running, generation)
            .await;
    }

    pub async fn destroy(&self, id: &str, generation: u64) {
        self.agent.emit(
            Kind::Destroyed,
            sandbox(id, "127.0.0.1", SandboxState::Stopped, generation),
        );
        let routes = self.proxy.routes().clone();
        wait_until(
            &format!("route {id} removed"),
            Duration::from_secs(5),
            || routes.get(id).is_none(),
        )
        .await;
    }

    /// Waits until `series` reads `value`: request metrics are recorded in
    /// Pingora's `logging` hook, just after the response went out.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let m = self.proxy.metrics().clone();
        let what = format!("{series} == {value}");
        wait_until(&what, Duration::from_secs(5), || {
            metric(&m.render(), series) == value
        })
        .await;
    }

    /// The value of the sample named exactly `series` (with labels, if any).
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.proxy.metrics().render(), series)
    }
}

pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}
