//! Which `Host` values the two listeners answer, so a web page cannot reach
//! them through a DNS name of its own that it points at this machine (DNS
//! rebinding). Any other `Host` is answered `421 Misdirected Request`.
//!
//! # Rules
//! A `Host` (and an absolute-form request target's authority) is split into
//! a name or IP literal and an optional port; names compare without regard
//! to ASCII case. Built in, with any port:
//! - proxy listener: `localhost` and `*.localhost`, the configured `domain`
//!   and every name under it (`<port>-<id>.<domain>`), loopback addresses,
//!   and the host's own addresses;
//! - admin listener: `localhost`, loopback addresses and the host's own
//!   addresses.
//!
//! `allowed_hosts` adds entries to both listeners:
//! - `name` — that name exactly (`proxy.internal`);
//! - `*.suffix` — every name ending in `.suffix`, not `suffix` itself
//!   (`*.sandbox.example.com`);
//! - an IP literal — `192.0.2.7`, `2001:db8::7` or `[2001:db8::7]`;
//! - any of these with `:port` (`proxy.internal:8080`, `[2001:db8::7]:8080`)
//!   matches a `Host` that names exactly that port; without a port, every
//!   port (and none) matches.
//!
//! A trailing dot is not ignored (`localhost.` is another name), an IPv6
//! literal must be in brackets, and a `Host` with a malformed port is never
//! allowed. A request with no `Host` at all (HTTP/1.0) is not checked:
//! browsers always send one.
//!
//! # Design
//! The check runs on every request of both proxy paths, before routing, so
//! it allocates nothing: byte comparisons for names, a parse for IP literals,
//! and for an IP that is not loopback one hash lookup in the set of the
//! host's own addresses (behind an `ArcSwap`). That set is read from the
//! kernel (`getifaddrs`) when the proxy starts and again every
//! [`OWN_ADDRS_REFRESH`] on the control runtime, off the request path.
//!
//! # Limitations
//! An address added to an interface is allowed only from the next refresh
//! (up to 30 s later); until then a `Host` naming it is answered 421.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

/// How often the host's own addresses are read again.
pub const OWN_ADDRS_REFRESH: Duration = Duration::from_secs(30);

/// Which listener a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Proxy,
    Admin,
}

/// The `Host` values a proxy instance answers.
#[derive(Debug)]
pub(crate) struct AllowedHosts {
    /// The configured domain, lower-case.
    domain: Box<[u8]>,
    extra: Box<[Pattern]>,
    own: Arc<OwnAddrs>,
}

impl AllowedHosts {
    /// The rules for `domain` plus the `allowed_hosts` entries (checked by
    /// `ProxyConfig::validate`; an entry that does not parse is an error).
    pub(crate) fn new(
        domain: &str,
        allowed_hosts: &[String],
        own: Arc<OwnAddrs>,
    ) -> Result<Self, String> {
        let extra = allowed_hosts
            .iter()
            .map(|e| Pattern::parse(e).map_err(|why| format!("entry {e:?} {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedHosts {
            domain: domain.to_ascii_lowercase().into_bytes().into(),
            extra: extra.into(),
            own,
        })
    }

    /// Whether `listener` answers a request whose `Host` (or absolute-form
    /// authority) is `host`, as sent (port included).
    pub(crate) fn allows(&self, listener: Listener, host: &[u8]) -> bool {
        let Some(h) = HostRef::split(host) else {
            return false;
        };
        let built_in = match h.ip {
            Some(ip) => {
                let ip = ip.to_canonical();
                ip.is_loopback() || self.own.contains(ip)
            }
            None => {
                let n = h.name;
                n.eq_ignore_ascii_case(b"localhost")
                    || (listener == Listener::Proxy
                        && (is_under(n, b"localhost")
                            || n.eq_ignore_ascii_case(&self.domain)
                            || is_under(n, &self.domain)))
            }
        };
        built_in || self.extra.iter().any(|p| p.matches(&h))
    }

    /// Checks a request to `listener` with these `Host` header values and,
    /// for an absolute-form target, this authority: every one of them must
    /// be allowed. `Err` holds the first one refused.
    pub(crate) fn check<'a>(
        &self,
        listener: Listener,
        hosts: impl IntoIterator<Item = &'a [u8]>,
        authority: Option<&'a [u8]>,
    ) -> Result<(), &'a [u8]> {
        match hosts
            .into_iter()
            .chain(authority)
            .find(|h| !self.allows(listener, h))
        {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }
}

/// Whether `name` ends in `.<parent>` with at least one byte before it.
fn is_under(name: &[u8], parent: &[u8]) -> bool {
    name.len() > parent.len() + 1
        && name[name.len() - parent.len() - 1] == b'.'
        && name[name.len() - parent.len()..].eq_ignore_ascii_case(parent)
}

/// A `Host` value taken apart (borrowed; nothing allocated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostRef<'a> {
    /// The name or IP literal as sent (IPv6 without its brackets).
    name: &'a [u8],
    ip: Option<IpAddr>,
    port: Option<u16>,
}

impl<'a> HostRef<'a> {
    /// `name[:port]`, `ipv4[:port]` or `[ipv6][:port]`; `None` when malformed
    /// (empty, an unbracketed IPv6, a bad port).
    fn split(host: &'a [u8]) -> Option<HostRef<'a>> {
        let (name, port, bracketed) = if let Some(rest) = host.strip_prefix(b"[") {
            let end = rest.iter().position(|&b| b == b']')?;
            let port = match &rest[end + 1..] {
                [] => None,
                [b':', port @ ..] => Some(port),
                _ => return None,
            };
            (&rest[..end], port, true)
        } else {
            match host.iter().position(|&b| b == b':') {
                Some(colon) => (&host[..colon], Some(&host[colon + 1..]), false),
                None => (host, None, false),
            }
        };
        if name.is_empty() {
            return None;
        }
        let port = match port {
            None | Some([]) => None,
            Some(p) => Some(parse_port(p)?),
        };
        let ip = if bracketed {
            Some(IpAddr::V6(std::str::from_utf8(name).ok()?.parse().ok()?))
        } else if name.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
            std::str::from_utf8(name)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(IpAddr::V4)
        } else {
            None
        };
        Some(HostRef { name, ip, port })
    }
}

fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(p).ok()?.parse().ok()
}

/// One `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    name: Name,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// Lower-case.
    Exact(Box<[u8]>),
    /// Lower-case, without the `*.`.
    Suffix(Box<[u8]>),
    Ip(IpAddr),
}

impl Pattern {
    /// Parses an entry; the error says what is wrong with it.
    pub(crate) fn parse(entry: &str) -> Result<Pattern, String> {
        if entry.is_empty() {
            return Err("is empty".into());
        }
        if entry == "*" || entry.starts_with("*:") {
            return Err("would allow every host: list the names instead".into());
        }
        // A bare IPv6 literal (several colons, no brackets), without a port.
        if let Ok(v6) = entry.parse::<Ipv6Addr>() {
            return Ok(Pattern {
                name: Name::Ip(IpAddr::V6(v6)),
                port: None,
            });
        }
        let Some(h) = HostRef::split(entry.as_bytes()) else {
            return Err(
                "is not a host: expected name, *.suffix or an IP literal, optionally with :port (IPv6 in brackets)"
                    .into(),
            );
        };
        if entry.ends_with(':') {
            return Err("has an empty port".into());
        }
        let name = if let Some(ip) = h.ip {
            Name::Ip(ip)
        } else if let Some(suffix) = h.name.strip_prefix(b"*.") {
            check_name(suffix)?;
            Name::Suffix(suffix.to_ascii_lowercase().into())
        } else {
            check_name(h.name)?;
            Name::Exact(h.name.to_ascii_lowercase().into())
        };
        if h.port == Some(0) {
            return Err("has port 0".into());
        }
        Ok(Pattern { name, port: h.port })
    }

    fn matches(&self, h: &HostRef<'_>) -> bool {
        if self.port.is_some() && self.port != h.port {
            return false;
        }
        match &self.name {
            Name::Exact(n) => h.ip.is_none() && h.name.eq_ignore_ascii_case(n),
            Name::Suffix(s) => h.ip.is_none() && is_under(h.name, s),
            Name::Ip(ip) => h.ip.is_some_and(|a| a.to_canonical() == ip.to_canonical()),
        }
    }
}

/// A DNS name: labels of letters, digits, `-` and `_`, 1–63 bytes each.
fn check_name(name: &[u8]) -> Result<(), String> {
    if name.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err(
                "has an empty or over-long label (a `*` is only allowed as `*.suffix`)".into(),
            );
        }
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(
                "may only hold letters, digits, '-', '_' and '.' (and a leading `*.`)".into(),
            );
        }
    }
    Ok(())
}

/// The host's own addresses, read from the kernel at start and refreshed.
#[derive(Debug, Default)]
pub struct OwnAddrs {
    set: ArcSwap<HashSet<IpAddr>>,
}

impl OwnAddrs {
    /// Reads the addresses now.
    pub(crate) fn read() -> Arc<OwnAddrs> {
        let own = Arc::new(OwnAddrs::default());
        own.refresh();
        own
    }

    /// Whether `ip` (canonical) is an address of this host.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.set.load().contains(&ip)
    }

    /// Reads the addresses of every interface again; on failure the last
    /// set is kept (logged).
    pub(crate) fn refresh(&self) {
        match interface_addrs() {
            Ok(set) => {
                if **self.set.load() != set {
                    tracing::debug!(addresses = set.len(), "host addresses changed");
                    self.set.store(Arc::new(set));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the host's addresses; keeping the last ones for Host checks");
            }
        }
    }

    /// Refreshes every [`OWN_ADDRS_REFRESH`] until the task is dropped.
    pub(crate) async fn keep_fresh(self: Arc<Self>) {
        let mut every = tokio::time::interval(OWN_ADDRS_REFRESH);
        every.tick().await; // the first tick is now: read at start already
        loop {
            every.tick().await;
            let own = self.clone();
            // A netlink dump: cheap, but not for an async worker.
            let _ = tokio::task::spawn_blocking(move || own.refresh()).await;
        }
    }

    #[cfg(test)]
    pub(crate) fn of(addrs: impl IntoIterator<Item = IpAddr>) -> Arc<OwnAddrs> {
        let own = OwnAddrs::default();
        own.set.store(Arc::new(addrs.into_iter().collect()));
        Arc::new(own)
    }
}

fn interface_addrs() -> nix::Result<HashSet<IpAddr>> {
    let mut set = HashSet::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            set.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            set.insert(IpAddr::V6(v6.ip()).to_canonical());
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
