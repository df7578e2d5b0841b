//! The route table: sandbox id → address, state, generation.
//!
//! # Design
//! The table is an immutable `HashMap` behind an [`ArcSwap`]. The request
//! path does one `load` (no lock, no syscall, no allocation) and clones the
//! `Arc<Route>` it needs; writers (the agent watcher, tests) build a new map
//! and swap it in. Writes are rare (sandbox lifecycle events) and a full
//! resync replaces the whole map in one swap, so readers never see half a
//! snapshot.
//!
//! Each route also carries the lock-free counters the request path updates:
//! requests in flight per port (for the per-upstream cap) and in total (the
//! `open connections per sandbox` metric).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use wrenn_types::SandboxId;

/// Lifecycle states in which a sandbox has a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    Starting,
    Running,
    Paused,
}

impl RouteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteState::Starting => "starting",
            RouteState::Running => "running",
            RouteState::Paused => "paused",
        }
    }
}

/// What `Host` the upstream sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPolicy {
    /// The browser's own `Host` (default; Jupyter compares Origin with Host).
    Public,
    /// `localhost:<port>`, for dev servers with a host allow-list (Vite, webpack).
    Localhost,
}

/// What the path form sends upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixPolicy {
    /// `/<rest>`: the `/proxy/<id>/<port>` prefix is stripped (default; the
    /// app sees itself at `/`).
    Strip,
    /// The whole path, prefix included, for apps started with a matching
    /// base URL (Jupyter's `--ServerApp.base_url=/proxy/<id>/<port>/`).
    Keep,
}

/// Sandbox metadata key: `localhost` sends `Host: localhost:<port>` on every port.
pub const META_HOST: &str = "wrenn.proxy.host";
/// Sandbox metadata key prefix: `wrenn.proxy.host.<port>` = `localhost` | `public`
/// sets the Host policy of one port (overrides [`META_HOST`]).
pub const META_HOST_PORT_PREFIX: &str = "wrenn.proxy.host.";
/// Sandbox metadata key: `keep` sends path-form requests upstream with their
/// `/proxy/<id>/<port>` prefix on every port (`strip`, the default, removes it).
pub const META_PREFIX: &str = "wrenn.proxy.prefix";
/// Sandbox metadata key prefix: `wrenn.proxy.prefix.<port>` = `keep` | `strip`
/// sets the prefix policy of one port (overrides [`META_PREFIX`]).
pub const META_PREFIX_PORT_PREFIX: &str = "wrenn.proxy.prefix.";

/// Per-route options, read from the sandbox's metadata when the route is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    pub default_host: Option<HostPolicy>,
    pub port_hosts: Vec<(u16, HostPolicy)>,
    pub default_prefix: Option<PrefixPolicy>,
    pub port_prefixes: Vec<(u16, PrefixPolicy)>,
}

impl RouteOptions {
    /// Reads the `wrenn.proxy.host*` and `wrenn.proxy.prefix*` keys; unknown
    /// values are ignored (and reported through the returned list of bad keys).
    pub fn from_metadata<'a>(
        meta: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> (Self, Vec<String>) {
        let mut opts = RouteOptions::default();
        let mut bad = Vec::new();
        for (k, v) in meta {
            if k == META_PREFIX || k.starts_with(META_PREFIX_PORT_PREFIX) {
                opts.read_prefix(k, v, &mut bad);
                continue;
            }
            let policy = match v.as_str() {
                "localhost" => Some(HostPolicy::Localhost),
                "public" => Some(HostPolicy::Public),
                _ => None,
            };
            if k == META_HOST {
                match policy {
                    Some(p) => opts.default_host = Some(p),
                    None => bad.push(k.clone()),
                }
            } else if let Some(port) = k.strip_prefix(META_HOST_PORT_PREFIX) {
                match (port.parse::<u16>(), policy) {
                    (Ok(port), Some(p)) if port > 0 => opts.port_hosts.push((port, p)),
                    _ => bad.push(k.clone()),
                }
            }
        }
        (opts, bad)
    }

    fn read_prefix(&mut self, k: &str, v: &str, bad: &mut Vec<String>) {
        let policy = match v {
            "keep" => Some(PrefixPolicy::Keep),
            "strip" => Some(PrefixPolicy::Strip),
            _ => None,
        };
        match (k.strip_prefix(META_PREFIX_PORT_PREFIX), policy) {
            (None, Some(p)) => self.default_prefix = Some(p),
            (Some(port), Some(p)) => match port.parse::<u16>() {
                Ok(port) if port > 0 => self.port_prefixes.push((port, p)),
                _ => bad.push(k.to_owned()),
            },
            (_, None) => bad.push(k.to_owned()),
        }
    }

    pub fn prefix_policy(&self, port: u16) -> PrefixPolicy {
        self.port_prefixes
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, h)| *h)
            .or(self.default_prefix)
            .unwrap_or(PrefixPolicy::Strip)
    }

    pub fn host_policy(&self, port: u16) -> HostPolicy {
        self.port_hosts
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, h)| *h)
            .or(self.default_host)
            .unwrap_or(HostPolicy::Public)
    }
}

const PORT_SLOTS: usize = 8;

/// Requests in flight per port, without locks: a port claims one of a few
/// slots the first time it is used; ports beyond that share an overflow
/// counter (which only makes the cap stricter for them).
#[derive(Debug, Default)]
pub(crate) struct PortCounters {
    ports: [AtomicU32; PORT_SLOTS],
    counts: [AtomicU32; PORT_SLOTS],
    overflow: AtomicU32,
}

impl PortCounters {
    fn slot(&self, port: u16) -> &AtomicU32 {
        let key = u32::from(port);
        for i in 0..PORT_SLOTS {
            let cur = self.ports[i].load(Ordering::Acquire);
            if cur == key {
                return &self.counts[i];
            }
            if cur == 0 {
                match self.ports[i].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return &self.counts[i],
                    Err(now) if now == key => return &self.counts[i],
                    Err(_) => continue,
                }
            }
        }
        &self.overflow
    }

    /// Counts one more request to `port`; returns the new count.
    pub(crate) fn acquire(&self, port: u16) -> u32 {
        self.slot(port).fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn release(&self, port: u16) {
        self.slot(port).fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, port: u16) -> u32 {
        self.slot(port).load(Ordering::Relaxed)
    }
}

/// One sandbox as the proxy sees it.
#[derive(Debug)]
pub struct Route {
    pub id: SandboxId,
    pub state: RouteState,
    /// Host-reachable address; `None` while a starting sandbox has none yet.
    pub address: Option<IpAddr>,
    pub generation: u64,
    pub options: RouteOptions,
    /// Host path of the sandbox's network namespace, when its loopback can be
    /// reached there (namespace sandboxes); see [`crate::netns`].
    pub netns: Option<Arc<std::path::Path>>,
    pool_base: u64,
    pub(crate) in_flight: PortCounters,
    pub(crate) open: AtomicU64,
}

impl Route {
    pub fn new(
        id: SandboxId,
        state: RouteState,
        address: Option<IpAddr>,
        generation: u64,
        options: RouteOptions,
    ) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        generation.hash(&mut h);
        Route {
            id,
            state,
            address,
            generation,
            options,
            netns: None,
            pool_base: h.finish(),
            in_flight: PortCounters::default(),
            open: AtomicU64::new(0),
        }
    }

    /// The same route with the sandbox's network namespace set.
    pub fn with_netns(mut self, netns: impl Into<Arc<std::path::Path>>) -> Self {
        self.netns = Some(netns.into());
        self
    }

    /// Pool key for `port`: distinct for every (id, generation, port), so a
    /// recycled address never hands one sandbox's socket to another.
    pub fn pool_key(&self, port: u16) -> u64 {
        // splitmix64 finaliser: a bijection, cheap on the request path.
        let mut z = self.pool_base ^ u64::from(port).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Upstream requests (including WebSocket tunnels) currently open.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Upstream requests currently open to `port`.
    pub fn in_flight(&self, port: u16) -> u32 {
        self.in_flight.get(port)
    }
}

type Map = HashMap<Box<str>, Arc<Route>>;

/// Sandbox id → route, read without locks.
#[derive(Debug, Default)]
pub struct RouteTable {
    map: ArcSwap<Map>,
    synced: AtomicBool,
    /// Why the table no longer follows its source (the agent's watch stream
    /// was lost), until the next complete snapshot.
    stale: Mutex<Option<String>>,
    changes: AtomicU64,
}

/// Whether a route table can be trusted (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Synced with the agent and following it.
    Ready,
    /// Never filled from a complete snapshot; the last error, if any.
    NotSynced(Option<String>),
    /// Synced once, but the agent's stream is lost (why): the last routes
    /// keep serving until the next complete snapshot.
    Stale(String),
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The route of sandbox `id`, if it has one. Lock-free.
    pub fn get(&self, id: &str) -> Option<Arc<Route>> {
        self.map.load().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every route, in no particular order.
    pub fn snapshot(&self) -> Vec<Arc<Route>> {
        self.map.load().values().cloned().collect()
    }

    /// Adds or replaces the route of `route.id`.
    pub fn upsert(&self, route: Route) {
        let route = Arc::new(route);
        self.map.rcu(|m| {
            let mut m = Map::clone(m);
            m.insert(route.id.as_str().into(), route.clone());
            m
        });
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Removes the route of `id` unless it is newer than `generation`
    /// (`None` removes whatever is there). Returns whether one was removed.
    pub fn remove(&self, id: &str, generation: Option<u64>) -> bool {
        let mut removed = false;
        self.map.rcu(|m| {
            removed = false;
            match m.get(id) {
                Some(r) if generation.is_none_or(|g| r.generation <= g) => {
                    let mut m = Map::clone(m);
                    m.remove(id);
                    removed = true;
                    Arc::new(m)
                }
                _ => Arc::clone(m),
            }
        });
        if removed {
            self.changes.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Replaces every route at once (a resync) and marks the table synced
    /// and current.
    pub fn replace_all(&self, routes: impl IntoIterator<Item = Route>) {
        let map: Map = routes
            .into_iter()
            .map(|r| (Box::<str>::from(r.id.as_str()), Arc::new(r)))
            .collect();
        self.map.store(Arc::new(map));
        self.mark_synced();
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Whether the table has been filled from a complete snapshot at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Marks the table synced and current (tables filled by their owner).
    pub fn mark_synced(&self) {
        *self.stale.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.synced.store(true, Ordering::Release);
    }

    /// The source of the routes is lost (`why`): they keep serving, but the
    /// table is not [`Readiness::Ready`] until the next [`Self::replace_all`].
    pub fn mark_stale(&self, why: impl Into<String>) {
        *self.stale.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.into());
    }

    /// Whether the table is synced and still following its source.
    pub fn readiness(&self) -> Readiness {
        let stale = self.stale.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (self.is_synced(), stale) {
            (false, why) => Readiness::NotSynced(why),
            (true, Some(why)) => Readiness::Stale(why),
            (true, None) => Readiness::Ready,
        }
    }

    /// Counts every applied change; tests poll it to know an event landed.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, generation: u64) -> Route {
        Route::new(
            id.parse().unwrap(),
            RouteState::Running,
            Some("10.210.0.3".parse().unwrap()),
            generation,
            RouteOptions::default(),
        )
    }

    #[test]
    fn upsert_get_remove_respects_generation() {
        let t = RouteTable::new();
        assert!(t.get("a").is_none());
        t.upsert(route("a", 2));
        assert_eq!(t.get("a").unwrap().generation, 2);
        assert!(
            !t.remove("a", Some(1)),
            "an older destroy must not remove a newer route"
        );
        assert!(t.get("a").is_some());
        assert!(t.remove("a", Some(2)));
        assert!(t.get("a").is_none());
        assert!(!t.remove("a", None));
        assert_eq!(t.changes(), 2);
    }

    #[test]
    fn replace_all_swaps_the_whole_table() {
        let t = RouteTable::new();
        t.upsert(route("old", 1));
        assert!(!t.is_synced());
        t.replace_all([route("a", 1), route("b", 1)]);
        assert!(t.is_synced());
        assert!(t.get("old").is_none());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_lost_source_makes_the_table_stale_until_the_next_snapshot() {
        let t = RouteTable::new();
        assert_eq!(t.readiness(), Readiness::NotSynced(None));
        t.mark_stale("agent down");
        assert_eq!(
            t.readiness(),
            Readiness::NotSynced(Some("agent down".into()))
        );
        t.replace_all([route("a", 1)]);
        assert_eq!(t.readiness(), Readiness::Ready);
        t.mark_stale("stream ended");
        assert_eq!(t.readiness(), Readiness::Stale("stream ended".into()));
        assert!(t.get("a").is_some(), "stale routes keep serving");
        assert!(t.is_synced());
        t.replace_all([route("a", 2)]);
        assert_eq!(t.readiness(), Readiness::Ready);
    }

    #[test]
    fn pool_keys_differ_by_generation_and_port() {
        let a1 = route("a", 1);
        let a2 = route("a", 2);
        let b1 = route("b", 1);
        assert_eq!(a1.pool_key(80), route("a", 1).pool_key(80));
        assert_ne!(a1.pool_key(80), a2.pool_key(80));
        assert_ne!(a1.pool_key(80), a1.pool_key(81));
        assert_ne!(a1.pool_key(80), b1.pool_key(80));
    }

    #[test]
    fn port_counters_track_ports_separately_and_overflow() {
        let c = PortCounters::default();
        assert_eq!(c.acquire(8000), 1);
        assert_eq!(c.acquire(8000), 2);
        assert_eq!(c.acquire(3000), 1);
        c.release(8000);
        assert_eq!(c.get(8000), 1);
        for p in 1..=PORT_SLOTS as u16 {
            c.acquire(10_000 + p);
        }
        // Slots are full: the last two ports and any later one share the overflow counter.
        assert_eq!(c.get(20_000), 2);
        assert_eq!(c.get(10_001), 1);
    }

    #[test]
    fn host_policy_comes_from_metadata() {
        let meta: HashMap<String, String> = [
            (META_HOST.to_owned(), "localhost".to_owned()),
            (format!("{META_HOST_PORT_PREFIX}8888"), "public".to_owned()),
            (format!("{META_HOST_PORT_PREFIX}0"), "public".to_owned()),
            (
                format!("{META_HOST_PORT_PREFIX}5173"),
                "nonsense".to_owned(),
            ),
            ("unrelated".to_owned(), "x".to_owned()),
        ]
        .into();
        let (opts, mut bad) = RouteOptions::from_metadata(&meta);
        bad.sort();
        assert_eq!(bad, ["wrenn.proxy.host.0", "wrenn.proxy.host.5173"]);
        assert_eq!(opts.host_policy(3000), HostPolicy::Localhost);
        assert_eq!(opts.host_policy(8888), HostPolicy::Public);
        assert_eq!(
            RouteOptions::default().host_policy(3000),
            HostPolicy::Public
        );
    }

    #[test]
    fn prefix_policy_comes_from_metadata() {
        let meta: HashMap<String, String> = [
            (META_PREFIX.to_owned(), "keep".to_owned()),
            (format!("{META_PREFIX_PORT_PREFIX}3000"), "strip".to_owned()),
            (format!("{META_PREFIX_PORT_PREFIX}x"), "keep".to_owned()),
            (format!("{META_PREFIX_PORT_PREFIX}8889"), "yes".to_owned()),
            (META_HOST.to_owned(), "localhost".to_owned()),
        ]
        .into();
        let (opts, mut bad) = RouteOptions::from_metadata(&meta);
        bad.sort();
        assert_eq!(bad, ["wrenn.proxy.prefix.8889", "wrenn.proxy.prefix.x"]);
        assert_eq!(opts.prefix_policy(8888), PrefixPolicy::Keep);
        assert_eq!(opts.prefix_policy(3000), PrefixPolicy::Strip);
        assert_eq!(opts.host_policy(8888), HostPolicy::Localhost);
        assert_eq!(
            RouteOptions::default().prefix_policy(8888),
            PrefixPolicy::Strip
        );
    }
}
