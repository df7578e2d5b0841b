//! The sandbox's `/etc/resolv.conf`.
//!
//! With internet access the sandbox gets the host's nameservers that are
//! reachable from a sandbox: IPv4, not loopback (a stub resolver such as
//! systemd-resolved's `127.0.0.53` is replaced by its upstreams from
//! `/run/systemd/resolve/resolv.conf`), and not an address of the host itself
//! (the firewall keeps sandboxes off every host port). Without internet, or
//! when no such nameserver exists, the file names none, so a resolver fails at
//! once instead of waiting for a dead server.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;

const HOST_RESOLV: &str = "/etc/resolv.conf";
const SYSTEMD_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
/// glibc reads at most three nameservers.
const MAX_NAMESERVERS: usize = 3;

/// Contents of a sandbox's `/etc/resolv.conf`.
pub fn sandbox_resolv_conf(internet: bool) -> String {
    let servers = if internet {
        host_nameservers()
    } else {
        Vec::new()
    };
    render(&servers, internet)
}

fn render(servers: &[Ipv4Addr], internet: bool) -> String {
    let mut out = String::from("# written by wrenn\n");
    if servers.is_empty() {
        out.push_str(if internet {
            "# the host has no resolver reachable from a sandbox\n"
        } else {
            "# no internet access: no resolver\n"
        });
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !servers.is_empty() {
        out.push_str("options timeout:2 attempts:2\n");
    }
    out
}

/// The host's nameservers usable from a sandbox.
pub fn host_nameservers() -> Vec<Ipv4Addr> {
    let mut servers = read_nameservers(Path::new(HOST_RESOLV));
    if servers.iter().all(|s| s.is_loopback()) {
        servers = read_nameservers(Path::new(SYSTEMD_UPSTREAM));
    }
    servers.retain(|s| reachable_from_sandbox(*s));
    servers.dedup();
    servers.truncate(MAX_NAMESERVERS);
    servers
}

fn read_nameservers(path: &Path) -> Vec<Ipv4Addr> {
    std::fs::read_to_string(path)
        .map(|text| parse_nameservers(&text))
        .unwrap_or_default()
}

pub fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Not loopback, unspecified or link-local, and not an address of this host
/// (binding to it fails unless it is local).
fn reachable_from_sandbox(a: Ipv4Addr) -> bool {
    !(a.is_loopback() || a.is_unspecified() || a.is_link_local() || a.is_multicast())
        && UdpSocket::bind((a, 0)).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_nameservers_only() {
        let text = "search x\nnameserver 10.0.0.1\nnameserver ::1\n# nameserver 9.9.9.9\nnameserver 127.0.0.53\n";
        assert_eq!(
            parse_nameservers(text),
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 53)]
        );
    }

    #[test]
    fn loopback_and_host_addresses_are_not_reachable_from_a_sandbox() {
        assert!(!reachable_from_sandbox(Ipv4Addr::new(127, 0, 0, 53)));
        assert!(!reachable_from_sandbox(Ipv4Addr::new(169, 254, 1, 1)));
        // An address of this host (any it can bind) is the host's own.
        let out = std::process::Command::new("hostname")
            .arg("-I")
            .output()
            .unwrap();
        let own: Vec<Ipv4Addr> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|a| a.parse().ok())
            .collect();
        assert!(!own.is_empty(), "the host has an IPv4 address");
        for a in own {
            assert!(!reachable_from_sandbox(a), "{a} is the host's own");
        }
        // TEST-NET-3 is never local.
        assert!(reachable_from_sandbox(Ipv4Addr::new(203, 0, 113, 7)));
    }

    #[test]
    fn without_internet_no_nameserver_is_written() {
        let text = sandbox_resolv_conf(false);
        assert!(parse_nameservers(&text).is_empty(), "{text}");
        let with = render(&[Ipv4Addr::new(10, 1, 2, 3)], true);
        assert_eq!(parse_nameservers(&with), vec![Ipv4Addr::new(10, 1, 2, 3)]);
    }
}
