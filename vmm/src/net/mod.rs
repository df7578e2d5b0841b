//! Sandbox networking shared by both backends.
//!
//! # Design
//!
//! The addressing plan is in [`crate::slot`]. For slot `s` of a runtime with
//! prefix `p`, [`Network::setup`]:
//!
//! 1. creates netns `p-s` (bound at `/run/netns/p-s`) with IPv6 off by
//!    default inside;
//! 2. creates the veth pair `wv<s>` (root namespace, interface group
//!    [`firewall::INTERNET_GROUP`] when the sandbox may reach the internet)
//!    and `eth0`, created directly inside the netns;
//! 3. turns IPv6 off and strict reverse-path filtering on for `wv<s>`, gives
//!    both ends their /31 address, brings them and `lo` up and routes the
//!    sandbox's default via the host end;
//! 4. for an internet sandbox, makes sure `net.ipv4.ip_forward` is on;
//! 5. adds the sandbox's egress lists to the instance's sets.
//!
//! At start ([`Network::prepare_host`]) the root namespace's IPv4 neighbour
//! table is sized for the slot range: every sandbox the agent or the proxy
//! talks to is one ARP entry on the host, and Linux's defaults
//! (`gc_thresh1/2/3` = 128/512/1024) start evicting entries in use at 512 and
//! refuse new ones ("neighbor table overflow") near 1024 — measured: creates
//! whose guest served but could not be reached, from ~600 sandboxes up.
//!
//! Inside the netns: IPv6 off (a create fails when it cannot be turned
//! off), `net.ipv4.ip_unprivileged_port_start = 0` and, for a sandbox with
//! a user namespace, `net.ipv4.ping_group_range` over its host gids: the
//! netns belongs to the host's user namespace, so the sandbox's root holds
//! no network capability there, yet may bind port 80 and ping. Outside:
//! `net.ipv4.ip_forward = 1` (once, for internet sandboxes), and IPv6 off and
//! `rp_filter = 1` on each `wv<slot>`.
//!
//! All of it goes over rtnetlink; netlink sockets inside a netns are created
//! by a short-lived thread that joins it ([`netns`]). The instance's
//! nftables table ([`firewall`]) is installed once, not per sandbox.
//! [`Network::teardown`] unbinds the netns; the kernel destroys it with its
//! links in the background once the sandbox's processes are gone
//! ([`Network::teardown_now`] also deletes `wv<s>` at once). Both are
//! idempotent, so teardown also cleans what a crashed agent left.
//!
//! # Limitations
//!
//! IPv4 only. An `iptables`/`nftables` policy of the host that drops forwarded
//! traffic (e.g. Docker's `FORWARD DROP`) also drops sandbox egress; the rules
//! here only ever narrow what is allowed.

pub mod firewall;
pub mod link;
pub mod netns;
pub mod resolv;
#[allow(unsafe_code)]
pub mod tap;

use std::io;
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rtnetlink::Handle;

use crate::slot::{self, Slot};
pub use firewall::Firewall;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step} {name}")]
    Netlink {
        step: &'static str,
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("nft: {what}: {stderr}")]
    Nft { what: String, stderr: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a slot's network is set up with.
#[derive(Debug, Clone, Default)]
pub struct SlotOptions {
    /// Egress to the internet.
    pub internet: bool,
    /// Networks reachable despite the defaults, and never reachable.
    pub allow_out: Vec<wrenn_types::Cidr>,
    pub deny_out: Vec<wrenn_types::Cidr>,
    /// The sandbox's host gids (first, last), for `ping_group_range`.
    pub gids: Option<(u32, u32)>,
}

impl SlotOptions {
    /// The slot's egress lists as the firewall's sets hold them.
    pub fn egress(&self, slot: Slot) -> firewall::Egress {
        firewall::Egress {
            addr: slot.sandbox_addr(),
            allow: self.allow_out.clone(),
            deny: self.deny_out.clone(),
        }
    }
}

/// A slot's network as set up: the netns and a netlink handle inside it.
#[derive(Debug)]
pub struct SlotNet {
    pub slot: Slot,
    pub netns: OwnedFd,
    pub inside: Handle,
}

/// The network of one runtime instance (prefix + slot range).
#[derive(Debug)]
pub struct Network {
    prefix: String,
    slots: RangeInclusive<u16>,
    firewall: Firewall,
    root: tokio::sync::OnceCell<Handle>,
    conf: std::sync::OnceLock<RootConf>,
}

/// The root namespace's per-interface sysctl directories.
#[derive(Debug)]
struct RootConf {
    v4: SysctlDir,
    v6: SysctlDir,
}

/// A `/proc/sys` directory held open, its files written relative to it.
///
/// Every network namespace has its own `/proc/sys/net`, and the kernel keeps
/// them all as same-named entries under `/proc/sys`: each lookup of a path
/// there compares against the entries of every namespace on the host. A
/// sandbox's network set-up wrote six such paths, which cost more the more
/// sandboxes ran (measured: the netns step 1.9 ms → 5.8 ms from 0 to 1000
/// sandboxes); relative writes look the shared part up once (inside a new
/// netns) or never (the root namespace's, held open).
#[derive(Debug)]
struct SysctlDir {
    fd: std::os::fd::OwnedFd,
    path: &'static str,
}

impl SysctlDir {
    fn open(path: &'static str) -> Result<SysctlDir> {
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::Io {
            step: "open sysctl directory",
            path: path.into(),
            source: e.into(),
        })?;
        Ok(SysctlDir { fd, path })
    }

    fn write(&self, rel: &str, value: &str) -> Result<()> {
        let err = |e: nix::Error| Error::Io {
            step: "write sysctl",
            path: Path::new(self.path).join(rel),
            source: e.into(),
        };
        let fd = nix::fcntl::openat(
            &self.fd,
            rel,
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(err)?;
        nix::unistd::write(&fd, value.as_bytes()).map_err(err)?;
        Ok(())
    }
}

static FORWARDING_ON: AtomicBool = AtomicBool::new(false);

impl Network {
    pub fn new(prefix: &str, slots: RangeInclusive<u16>) -> Self {
        Network {
            prefix: prefix.to_owned(),
            firewall: Firewall::new(prefix, &slots),
            slots,
            root: tokio::sync::OnceCell::new(),
            conf: std::sync::OnceLock::new(),
        }
    }

    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    pub fn netns_name(&self, slot: Slot) -> String {
        slot.netns_name(&self.prefix)
    }

    /// Netlink handle in the root namespace (created on first use).
    pub async fn root(&self) -> Result<&Handle> {
        self.root
            .get_or_try_init(|| async {
                link::connect().map_err(|source| Error::Io {
                    step: "open netlink socket",
                    path: "NETLINK_ROUTE".into(),
                    source,
                })
            })
            .await
    }

    /// `/proc/sys/net/ipv{4,6}/conf` of the root namespace, opened on first use.
    fn root_conf(&self) -> Result<&RootConf> {
        if let Some(c) = self.conf.get() {
            return Ok(c);
        }
        let c = RootConf {
            v4: SysctlDir::open("/proc/sys/net/ipv4/conf")?,
            v6: SysctlDir::open("/proc/sys/net/ipv6/conf")?,
        };
        Ok(self.conf.get_or_init(|| c))
    }

    /// Host settings the slot range needs, made once at start: the root
    /// namespace's neighbour table sized for it (only ever raised; see the
    /// module docs).
    pub fn prepare_host(&self) -> Result<()> {
        let slots = self.slots.clone().count().min(NEIGH_MAX_SLOTS) as u64;
        let conf = Path::new("/proc/sys/net/ipv4/neigh/default");
        for (name, want) in [
            ("gc_thresh3", 4 * slots + 1024),
            ("gc_thresh2", 2 * slots + 512),
            ("gc_thresh1", slots + 128),
        ] {
            raise_sysctl(&conf.join(name), want)?;
        }
        Ok(())
    }

    /// Creates the slot's netns and veth pair (see the module docs). On error
    /// nothing of the slot is left.
    pub async fn setup(&self, slot: Slot, opts: &SlotOptions) -> Result<SlotNet> {
        let mut result = self.try_setup(slot, opts).await;
        if let Ok(sn) = result {
            result = self.firewall.add_egress(&opts.egress(slot)).map(|()| sn);
        }
        if result.is_err()
            && let Err(e) = self.teardown_now(slot).await
        {
            tracing::warn!(slot = slot.get(), error = %e, "cleanup after failed network setup");
        }
        result
    }

    async fn try_setup(&self, slot: Slot, opts: &SlotOptions) -> Result<SlotNet> {
        let internet = opts.internet;
        let root = self.root().await?.clone();
        let name = self.netns_name(slot);
        let host = slot.host_iface();
        if netns::path(&name).exists() || link::index(&root, &host).await?.is_some() {
            // Ours by name (prefix and slot): a previous sandbox's network the
            // kernel is still destroying, or a crash's leftover.
            tracing::debug!(netns = %name, "removing the slot's previous network");
            self.teardown_now(slot).await?;
        }
        let ping = opts.gids.map(|(first, last)| format!("{first} {last}"));
        let made = netns::create(&name, move || -> Result<Handle> {
            // Looked up once: see `SysctlDir`.
            let net = SysctlDir::open("/proc/sys/net")?;
            for p in [
                "ipv6/conf/default/disable_ipv6",
                "ipv6/conf/all/disable_ipv6",
            ] {
                net.write(p, "1")?;
            }
            net.write("ipv4/ip_unprivileged_port_start", "0")?;
            if let Some(range) = &ping {
                net.write("ipv4/ping_group_range", range)?;
            }
            link::connect().map_err(|source| Error::Io {
                step: "open netlink socket in netns",
                path: "NETLINK_ROUTE".into(),
                source,
            })
        });
        let (netns, inside) = crate::steps::timed("netns", made).await?;
        let inside = inside?;
        let group = if internet {
            firewall::INTERNET_GROUP
        } else {
            0
        };
        let veth = link::create_veth(&root, &host, slot::GUEST_IFACE, &netns, group);
        let idx = crate::steps::timed("veth", veth).await?;
        let t = std::time::Instant::now();
        let conf = self.root_conf()?;
        conf.v6.write(&format!("{host}/disable_ipv6"), "1")?;
        conf.v4.write(&format!("{host}/rp_filter"), "1")?;
        link::add_addr(&root, idx, &host, slot.host_addr(), slot::LINK_PREFIX_LEN).await?;
        link::set_up(&root, idx, &host).await?;
        link::set_up(&inside, 1, "lo").await?;
        let eth0 = link::index(&inside, slot::GUEST_IFACE)
            .await?
            .ok_or_else(|| Error::Netlink {
                step: "find eth0 in netns",
                name: name.clone(),
                source: rtnetlink::Error::RequestFailed,
            })?;
        link::add_addr(
            &inside,
            eth0,
            slot::GUEST_IFACE,
            slot.sandbox_addr(),
            slot::LINK_PREFIX_LEN,
        )
        .await?;
        link::set_up(&inside, eth0, slot::GUEST_IFACE).await?;
        link::add_default_route(&inside, slot.host_addr()).await?;
        if internet {
            enable_forwarding()?;
        }
        crate::steps::observe("link_config", t);
        Ok(SlotNet {
            slot,
            netns,
            inside,
        })
    }

    /// Releases the slot's netns; the kernel then destroys it — and the veth
    /// pair (and any TAP) in it — in the background once the sandbox's last
    /// process is gone. Deleting `wv<slot>` synchronously instead costs
    /// 25–40 ms of RCU grace periods per sandbox (measured), blocking the
    /// calling thread. A slot whose `wv<slot>` still exists when it is
    /// reused is cleaned then ([`Network::setup`]). Idempotent.
    pub async fn teardown(&self, slot: Slot, egress: &firewall::Egress) -> Result<()> {
        let lists = self.firewall.remove_egress(egress);
        netns::remove(&self.netns_name(slot)).and(lists)
    }

    /// Like [`Network::teardown`], and deletes `wv<slot>` now (recovery,
    /// failed setups, reused slots).
    pub async fn teardown_now(&self, slot: Slot) -> Result<()> {
        let root = self.root().await?;
        let link = link::delete(root, &slot.host_iface()).await;
        let ns = netns::remove(&self.netns_name(slot));
        link.and(ns)
    }

    /// Whether the slot's host link is in the internet group (`None`: no link).
    pub async fn internet_of(&self, slot: Slot) -> Result<Option<bool>> {
        let root = self.root().await?;
        Ok(link::get(root, &slot.host_iface())
            .await?
            .map(|m| link::group_of(&m) == firewall::INTERNET_GROUP))
    }

    /// Slots of this instance's range that have a netns `<prefix>-<slot>`.
    ///
    /// A host link `wv<slot>` alone is not taken as ours: link names carry
    /// no prefix, so with a misconfigured overlapping slot range it could be
    /// another instance's. A link of ours without its netns lives only as
    /// long as something still holds the netns (a process, which the cgroup
    /// teardown kills) and then goes with it.
    pub async fn occupied_slots(&self) -> Result<Vec<Slot>> {
        let mut out: Vec<Slot> = netns::list()
            .iter()
            .filter_map(|n| Slot::from_netns_name(&self.prefix, n))
            .filter(|s| self.slots.contains(&s.get()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Slots the neighbour table is sized for at most (the default range is
/// 65534 slots; a host holds far fewer sandboxes).
const NEIGH_MAX_SLOTS: usize = 16384;

/// Sets an integer sysctl to `want` when it is lower.
fn raise_sysctl(path: &Path, want: u64) -> Result<()> {
    let current: u64 = std::fs::read_to_string(path)
        .map_err(|source| Error::Io {
            step: "read sysctl",
            path: path.to_owned(),
            source,
        })?
        .trim()
        .parse()
        .unwrap_or(0);
    if current < want {
        write_sysctl(path, &want.to_string())?;
        tracing::info!(sysctl = %path.display(), from = current, to = want, "raised for the sandboxes' slot range");
    }
    Ok(())
}

fn write_sysctl(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Io {
        step: "write sysctl",
        path: path.to_owned(),
        source,
    })
}

/// Turns on IPv4 forwarding (needed for egress), once per process.
fn enable_forwarding() -> Result<()> {
    if FORWARDING_ON.load(Ordering::Relaxed) {
        return Ok(());
    }
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current.trim() != "1" {
        write_sysctl(path, "1")?;
        tracing::info!("enabled net.ipv4.ip_forward for sandbox internet access");
    }
    FORWARDING_ON.store(true, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_are_only_ever_raised() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gc_thresh3");
        std::fs::write(&p, "1024\n").unwrap();
        raise_sysctl(&p, 512).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1024\n");
        raise_sysctl(&p, 9216).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "9216");
        assert!(raise_sysctl(&dir.path().join("missing"), 1).is_err());
    }

    /// The host's neighbour table fits the slot range after `prepare_host`
    /// (a live sysctl: raised, never lowered, so other users lose nothing).
    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
    fn prepare_host_sizes_the_neighbour_table_for_the_slots() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (CI runs as root)"
        );
        let net = Network::new("wrenn-tn", 1..=2000);
        net.prepare_host().unwrap();
        let read = |n: &str| -> u64 {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/default/{n}"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        assert!(read("gc_thresh3") >= 4 * 2000 + 1024);
        assert!(read("gc_thresh2") >= 2 * 2000 + 512);
        assert!(read("gc_thresh1") >= 2000 + 128);
    }
}
