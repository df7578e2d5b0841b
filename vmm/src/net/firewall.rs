//! The nftables table of one runtime instance.
//!
//! One table per instance, `ip <prefix>_<first>_<last>` (nft names cannot hold
//! `-`), holds every rule, so removing an instance's rules is one
//! `delete table` and instances side by side never touch each other's rules.
//! The rules never change per sandbox: a sandbox's internet access is carried
//! by the interface group of its host link (`wv<slot>`), set when the link is
//! created, and its own egress lists are elements of two sets keyed by its
//! address (added at create, removed at destroy; a create without lists
//! costs no nft call). Rules match the instance's address range `R` (both
//! ends of every slot of the instance):
//!
//! ```text
//! set private   not for internet sandboxes: RFC 1918, 100.64/10, 127/8,
//!               169.254/16 (cloud metadata), 0/8, test and benchmark nets,
//!               multicast and reserved (224/3)
//! set resolvers the host's nameservers a sandbox's resolv.conf names
//!               (`resolv`), read when the table is installed
//! set allow_out { sandbox address . network }   per-sandbox allow list
//! set deny_out  { sandbox address . network }   per-sandbox deny list
//! chain forward (filter, priority filter - 10)
//!   ip saddr R ip daddr 10.210.0.0/15 reject       # never sandbox -> sandbox (any instance)
//!   ip daddr R ip saddr 10.210.0.0/15 drop
//!   ip daddr R ct state established,related accept # replies to a sandbox's own connections
//!   ip daddr R drop                                # nothing outside starts a connection in
//!   ip saddr R ip saddr . ip daddr @deny_out reject
//!   ip saddr R ip saddr . ip daddr @allow_out accept
//!   ip saddr R iifgroup INTERNET ip daddr @resolvers tcp/udp dport 53 accept
//!                                                  # DNS, also where the resolver is private
//!   ip saddr R ip daddr @private reject            # the public internet only, by default
//!   ip saddr R iifgroup INTERNET accept            # egress, internet sandboxes only
//!   ip saddr R reject
//! chain input (filter, priority filter - 10)
//!   ip saddr R ct state established,related accept # answers to host-initiated connections
//!   ip saddr R reject                              # no host address or port, whatever the lists
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
//! address or reach the host over link-local IPv6. The table is IPv4 only
//! because IPv6 is off inside every sandbox and on its link; a create whose
//! netns cannot turn it off fails.
//!
//! The table is created when the runtime starts if it is missing, and
//! replaced — rules and the adopted sandboxes' elements in one transaction —
//! by recovery, so rules of an older version and elements a crash left
//! behind do not survive a restart.

use std::io::Write;
use std::net::Ipv4Addr;

use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use wrenn_types::Cidr;

use super::{Error, Result};
use crate::slot;

/// Interface group of the host link of a sandbox with internet access.
pub const INTERNET_GROUP: u32 = 0x0057_524e;
/// Program used to load rules.
pub const NFT: &str = "nft";
/// What an internet sandbox may not reach unless its allow list says so.
pub const PRIVATE: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
];

/// One sandbox's egress lists, as the sets hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub addr: Ipv4Addr,
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl Egress {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// `add element` / `delete element` lines for `verb`.
    fn script(&self, table: &str, verb: &str) -> String {
        let mut out = String::new();
        for (set, list) in [("allow_out", &self.allow), ("deny_out", &self.deny)] {
            if list.is_empty() {
                continue;
            }
            let elems: Vec<String> = list
                .iter()
                .map(|c| format!("{} . {c}", self.addr))
                .collect();
            out.push_str(&format!(
                "{verb} element ip {table} {set} {{ {} }}\n",
                elems.join(", ")
            ));
        }
        out
    }
}

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
        let private = PRIVATE.join(", ");
        let resolvers = super::resolv::host_nameservers();
        let resolver_elements = if resolvers.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = resolvers.iter().map(|a| a.to_string()).collect();
            format!("\n        elements = {{ {} }}", list.join(", "))
        };
        format!(
            "table ip {t} {{
    set private {{
        type ipv4_addr; flags interval;
        elements = {{ {private} }}
    }}
    set resolvers {{
        type ipv4_addr;{resolver_elements}
    }}
    set allow_out {{
        type ipv4_addr . ipv4_addr; flags interval;
    }}
    set deny_out {{
        type ipv4_addr . ipv4_addr; flags interval;
    }}
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
        ip saddr {r} ip saddr . ip daddr @deny_out {reject}
        ip saddr {r} ip saddr . ip daddr @allow_out accept
        ip saddr {r} iifgroup {INTERNET_GROUP} ip daddr @resolvers meta l4proto {{ tcp, udp }} th dport 53 accept
        ip saddr {r} ip daddr @private {reject}
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

    /// Installs the table with the given sandboxes' egress lists, replacing
    /// any previous version (rules and elements) in one transaction.
    pub fn install(&self, egress: &[Egress]) -> Result<()> {
        let t = &self.table;
        let mut script = format!("table ip {t}\ndelete table ip {t}\n{}", self.rules());
        for e in egress {
            script.push_str(&e.script(t, "add"));
        }
        run_nft(&["-f", "-"], Some(&script), &format!("install table {t}"))
    }

    /// Installs the table unless it exists (a running instance's rules and
    /// elements stay until recovery replaces them).
    pub fn ensure(&self) -> Result<()> {
        if self.exists() {
            return Ok(());
        }
        self.install(&[])
    }

    /// Adds a sandbox's egress lists (nothing to do for empty lists).
    pub fn add_egress(&self, e: &Egress) -> Result<()> {
        if e.is_empty() {
            return Ok(());
        }
        let what = format!("add egress lists of {}", e.addr);
        run_nft(&["-f", "-"], Some(&e.script(&self.table, "add")), &what)
    }

    /// Removes a sandbox's egress lists.
    pub fn remove_egress(&self, e: &Egress) -> Result<()> {
        if e.is_empty() {
            return Ok(());
        }
        let what = format!("remove egress lists of {}", e.addr);
        run_nft(&["-f", "-"], Some(&e.script(&self.table, "delete")), &what)
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
        for private in [
            "10.0.0.0/8",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "172.16.0.0/12",
        ] {
            assert!(rules.contains(private), "{private}");
        }
        let deny = rules.find("@deny_out").unwrap();
        let allow = rules.find("@allow_out").unwrap();
        let dns = rules.find("@resolvers").unwrap();
        let private = rules.find("@private").unwrap();
        assert!(
            deny < allow && allow < dns && dns < private,
            "deny, then allow, then DNS to the host's resolvers, then the default"
        );
    }

    #[test]
    fn egress_lists_become_set_elements_of_the_sandbox() {
        let e = Egress {
            addr: "10.210.7.209".parse().unwrap(),
            allow: vec![
                "10.1.2.0/24".parse().unwrap(),
                "192.168.1.5/32".parse().unwrap(),
            ],
            deny: vec!["8.8.8.8/32".parse().unwrap()],
        };
        assert_eq!(
            e.script("t", "add"),
            "add element ip t allow_out { 10.210.7.209 . 10.1.2.0/24, 10.210.7.209 . 192.168.1.5/32 }\n\
             add element ip t deny_out { 10.210.7.209 . 8.8.8.8/32 }\n"
        );
        let none = Egress {
            addr: e.addr,
            allow: vec![],
            deny: vec![],
        };
        assert!(none.is_empty() && none.script("t", "delete").is_empty());
    }
}
