//! The nftables table of one runtime instance.
//!
//! One table per instance, `ip <prefix>_<first>_<last>` (nft names cannot hold
//! `-`), holds every rule, so removing an instance's rules is one
//! `delete table` and instances side by side never touch each other's rules.
//! The table is installed (atomically replaced) when the runtime starts and
//! never changes per sandbox: a sandbox's internet access is carried by the
//! interface group of its host link (`wv<slot>`), set when the link is
//! created. Rules match the instance's address range `R` (both ends of
//! every slot of the instance):
//!
//! ```text
//! chain forward (filter, priority filter - 10)
//!   ip saddr R ip daddr 10.210.0.0/15 reject       # never sandbox -> sandbox (any instance)
//!   ip daddr R ip saddr 10.210.0.0/15 drop
//!   ip daddr R ct state established,related accept # replies to a sandbox's own connections
//!   ip daddr R drop                                # nothing outside starts a connection in
//!   ip saddr R ip daddr 169.254.0.0/16 reject      # no cloud metadata endpoints
//!   ip saddr R iifgroup INTERNET accept            # egress, internet sandboxes only
//!   ip saddr R reject
//! chain input (filter, priority filter - 10)
//!   ip saddr R ct state established,related accept # answers to host-initiated connections
//!   ip saddr R reject                              # no host port is reachable from a sandbox
//! chain postrouting (nat, srcnat)
//!   ip saddr R oifname != "wv*" masquerade         # egress leaves with the host's address
//! ```
//!
//! `reject` jumps to chain `refuse`: TCP gets a reset (`ECONNREFUSED` at
//! once; an ICMP error only surfaces after the first SYN retransmit, 1 s),
//! anything else `icmp admin-prohibited`. A sandbox's forbidden connection
//! fails at once instead of hanging until a timeout.
//! Host-initiated connections (agent RPC, proxy) leave through `output` and
//! their answers are `established`, so they work for every sandbox.
//! Anti-spoofing: the host end of every veth has strict reverse-path filtering
//! (`rp_filter = 1`) and no IPv6, so a sandbox cannot borrow another source
//! address or reach the host over link-local IPv6.

use std::io::Write;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};

use super::{Error, Result};
use crate::slot;

/// Interface group of the host link of a sandbox with internet access.
pub const INTERNET_GROUP: u32 = 0x0057_524e;
/// Program used to load rules.
pub const NFT: &str = "nft";

#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    range: (Ipv4Addr, Ipv4Addr),
}

impl Firewall {
    pub fn new(prefix: &str, slots: &RangeInclusive<u16>) -> Self {
        Firewall {
            table: format!(
                "{}_{}_{}",
                prefix.replace('-', "_"),
                slots.start(),
                slots.end()
            ),
            range: slot::address_range(slots),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The table's rules in nft syntax (see the module docs).
    pub fn rules(&self) -> String {
        let (lo, hi) = self.range;
        let r = format!("{lo}-{hi}");
        let net = format!("{}/{}", slot::BASE, slot::BASE_PREFIX_LEN);
        let t = &self.table;
        let reject = "goto refuse";
        format!(
            "table ip {t} {{
    chain refuse {{
        meta l4proto tcp reject with tcp reset
        reject with icmp type admin-prohibited
    }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        ip saddr {r} ip daddr {net} {reject}
        ip daddr {r} ip saddr {net} drop
        ip daddr {r} ct state established,related accept
        ip daddr {r} drop
        ip saddr {r} ip daddr 169.254.0.0/16 {reject}
        ip saddr {r} iifgroup {INTERNET_GROUP} accept
        ip saddr {r} {reject}
    }}
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        ip saddr {r} ct state established,related accept
        ip saddr {r} {reject}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {r} oifname != \"wv*\" masquerade
    }}
}}
"
        )
    }

    /// Installs the table, replacing any previous version atomically.
    pub fn install(&self) -> Result<()> {
        let t = &self.table;
        let script = format!("table ip {t}\ndelete table ip {t}\n{}", self.rules());
        run_nft(&["-f", "-"], Some(&script), &format!("install table {t}"))
    }

    /// Removes the table. Missing is fine (also when it vanishes meanwhile).
    pub fn remove(&self) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let what = format!("delete table {}", self.table);
        match run_nft(&["delete", "table", "ip", &self.table], None, &what) {
            Err(_) if !self.exists() => Ok(()),
            other => other,
        }
    }

    pub fn exists(&self) -> bool {
        Command::new(NFT)
            .args(["list", "table", "ip", &self.table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// Runs `nft` with `args`, feeding `stdin`; a failure carries nft's stderr.
pub fn run_nft(args: &[&str], stdin: Option<&str>, what: &str) -> Result<()> {
    run_nft_with(Command::new(NFT).args(args), stdin, what)
}

/// Like [`run_nft`] for a prepared command (e.g. one that joins a netns).
pub fn run_nft_with(cmd: &mut Command, stdin: Option<&str>, what: &str) -> Result<()> {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io {
            step: "run nft (install the nftables package)",
            path: NFT.into(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| Error::Io {
                step: "write nft script",
                path: NFT.into(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Io {
        step: "wait for nft",
        path: NFT.into(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft {
            what: what.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_name_and_range_derive_from_prefix_and_slots() {
        let fw = Firewall::new("wrenn-tv", &(1000..=1099));
        assert_eq!(fw.table(), "wrenn_tv_1000_1099");
        let rules = fw.rules();
        assert!(
            rules.contains("ip saddr 10.210.7.208-10.210.8.151 ip daddr 10.210.0.0/15 goto refuse"),
            "{rules}"
        );
        assert!(rules.contains(&format!("iifgroup {INTERNET_GROUP} accept")));
        assert!(rules.contains("masquerade"));
    }
}
