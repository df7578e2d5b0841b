//! The microVM's side of a slot's network, inside the slot's netns:
//!
//! ```text
//! host ── wv<s> ══ eth0 (10.210.x.2s+1) ── netns routing ── tap0 (169.254.0.22/30) ── guest eth0 (169.254.0.21)
//! ```
//!
//! `tap0` has txqueuelen [`TAP_TXQUEUELEN`](crate::net::tap::TAP_TXQUEUELEN).
//! Inside the netns (table `ip wrenn_fc`, gone with the netns) the
//! host-reachable address is DNATed to the guest and the guest's traffic is
//! SNATed to that address, so the host, the proxy and the firewall see the
//! same address as for a namespace sandbox; forwarding is on in the netns only.

use std::net::Ipv4Addr;

use crate::net::{Error, Result, SlotNet, firewall, link, netns, tap};
use crate::slot::Slot;

/// The guest's fixed link-local address.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 21);
/// `tap0`'s address inside the netns, the guest's gateway.
pub const TAP_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 22);
pub const TAP_PREFIX_LEN: u8 = 30;
/// Name of the NAT table inside the netns.
pub const NAT_TABLE: &str = "wrenn_fc";

/// The `ip=` kernel argument for a guest called `hostname`.
pub fn kernel_ip_arg(hostname: &str) -> String {
    format!("ip={GUEST_ADDR}::{TAP_ADDR}:255.255.255.252:{hostname}:eth0:off")
}

/// DNAT/SNAT rules of the slot's netns.
pub fn nat_rules(slot: Slot) -> String {
    let outer = slot.sandbox_addr();
    format!(
        "table ip {NAT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname \"eth0\" ip daddr {outer} dnat to {GUEST_ADDR}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"eth0\" ip saddr {GUEST_ADDR} snat to {outer}
    }}
}}
"
    )
}

/// Adds `tap0`, its address, forwarding and the NAT rules to a slot's netns.
pub async fn setup_guest_link(sn: &SlotNet) -> Result<()> {
    let idx = tap::create(&sn.netns, &sn.inside).await?;
    link::add_addr(&sn.inside, idx, tap::TAP_NAME, TAP_ADDR, TAP_PREFIX_LEN).await?;
    let rules = nat_rules(sn.slot);
    netns::run_in(&sn.netns, move || -> Result<()> {
        let p = "/proc/sys/net/ipv4/ip_forward";
        std::fs::write(p, "1").map_err(|source| Error::Io {
            step: "enable forwarding in netns",
            path: p.into(),
            source,
        })?;
        // Started from this thread, nft runs inside the netns.
        firewall::run_nft(&["-f", "-"], Some(&rules), "install NAT table in netns")
    })
    .await?
}

/// The NAT table as nft lists it inside `ns` (for checks).
pub async fn list_nat(ns: &std::os::fd::OwnedFd) -> Result<String> {
    netns::run_in(ns, || {
        std::process::Command::new(firewall::NFT)
            .args(["list", "table", "ip", NAT_TABLE])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|source| Error::Io {
                step: "run nft",
                path: firewall::NFT.into(),
                source,
            })
    })
    .await?
}
