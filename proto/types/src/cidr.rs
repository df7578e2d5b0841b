//! IPv4 networks in CIDR notation (`10.1.2.0/24`, or an address alone for
//! `/32`), for a sandbox's egress allow and deny lists.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: an address with its host bits clear, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: Ipv4Addr,
    len: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCidr {
    #[error("{0:?} is not an IPv4 network such as 10.1.2.0/24 (IPv6 is off in sandboxes)")]
    Syntax(String),
    #[error("{0:?}: the prefix length must be 0 to 32")]
    Length(String),
    #[error("{given:?} has host bits set; the network is {network}")]
    HostBits { given: String, network: Cidr },
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Cidr> {
        let c = Cidr { addr, len };
        (len <= 32 && c.network() == addr).then_some(c)
    }

    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(self) -> u8 {
        self.len
    }

    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(self, other: Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Cidr, InvalidCidr> {
        let syntax = || InvalidCidr::Syntax(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 2 {
                    return Err(InvalidCidr::Length(s.to_owned()));
                }
                (
                    a,
                    l.parse::<u8>()
                        .map_err(|_| InvalidCidr::Length(s.to_owned()))?,
                )
            }
            None => (s, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if len > 32 {
            return Err(InvalidCidr::Length(s.to_owned()));
        }
        let c = Cidr { addr, len };
        if c.network() != addr {
            return Err(InvalidCidr::HostBits {
                given: s.to_owned(),
                network: Cidr {
                    addr: c.network(),
                    len,
                },
            });
        }
        Ok(c)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_names_what_is_wrong() {
        let c: Cidr = "10.1.2.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.0/24");
        assert!(c.contains("10.1.2.200".parse().unwrap()));
        assert!(!c.contains("10.1.3.1".parse().unwrap()));
        assert_eq!("8.8.8.8".parse::<Cidr>().unwrap().to_string(), "8.8.8.8/32");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len(), 0);
        let e = "10.1.2.3/24".parse::<Cidr>().unwrap_err();
        assert!(e.to_string().contains("10.1.2.0/24"), "{e}");
        for bad in ["10.1.2.0/33", "10.1.2.0/", "10.1.2.0/x", "10.1.2.0/024"] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(InvalidCidr::Length(_))),
                "{bad}"
            );
        }
        for bad in ["fd00::/8", "nope", "", "10.1.2/24"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(matches!(e, InvalidCidr::Syntax(_)), "{bad}: {e}");
        }
        assert!(
            "fd00::/8"
                .parse::<Cidr>()
                .unwrap_err()
                .to_string()
                .contains("IPv6")
        );
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(a.overlaps("10.210.0.0/15".parse().unwrap()));
        assert!(!a.overlaps("192.168.0.0/16".parse().unwrap()));
    }
}
