//! Network slots and the addressing plan they determine.
//!
//! Slot `s` in `1..=65534`, base `10.210.0.0/15`:
//!
//! | what | value |
//! |---|---|
//! | host end of the veth pair | `wv<s>`, root namespace, `10.210.0.0 + 2s` /31 |
//! | sandbox end | `eth0` in netns `<prefix>-<s>`, `10.210.0.0 + 2s + 1` /31 |
//! | default route inside the netns | via the host end |
//!
//! Everything host-global (netns name, host link name, addresses) is a pure
//! function of the slot and the runtime's prefix, so start-up cleanup can find
//! what a crashed agent left by name alone.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// First address of the sandbox network, `10.210.0.0/15`.
pub const BASE: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 0);
/// Prefix length of the whole sandbox network.
pub const BASE_PREFIX_LEN: u8 = 15;
/// Prefix length of each slot's link.
pub const LINK_PREFIX_LEN: u8 = 31;
pub const MIN_SLOT: u16 = 1;
pub const MAX_SLOT: u16 = 65534;
/// Name of the sandbox end of the veth pair inside its netns.
pub const GUEST_IFACE: &str = "eth0";
/// Prefix of the host end's name: `wv<slot>`.
pub const HOST_IFACE_PREFIX: &str = "wv";

/// The whole sandbox network, `10.210.0.0/15`.
pub fn network() -> wrenn_types::Cidr {
    wrenn_types::Cidr::new(BASE, BASE_PREFIX_LEN).expect("BASE is a /15 network")
}

/// A network slot, `1..=65534`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u16);

impl Slot {
    pub fn new(n: u16) -> Option<Slot> {
        (MIN_SLOT..=MAX_SLOT).contains(&n).then_some(Slot(n))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// Address of the host end (`wv<slot>`), the sandbox's gateway.
    pub fn host_addr(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(BASE) + 2 * u32::from(self.0))
    }

    /// The sandbox's host-reachable address (`eth0` in its netns).
    pub fn sandbox_addr(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(BASE) + 2 * u32::from(self.0) + 1)
    }

    /// Name of the host end of the veth pair.
    pub fn host_iface(self) -> String {
        format!("{HOST_IFACE_PREFIX}{}", self.0)
    }

    /// Name of the sandbox's network namespace (`/run/netns/<name>`).
    pub fn netns_name(self, prefix: &str) -> String {
        format!("{prefix}-{}", self.0)
    }

    /// The slot a host link name belongs to (`wv1234` → 1234).
    pub fn from_host_iface(name: &str) -> Option<Slot> {
        parse_slot(name.strip_prefix(HOST_IFACE_PREFIX)?)
    }

    /// The slot a netns name of `prefix` belongs to (`wrenn-12` → 12).
    pub fn from_netns_name(prefix: &str, name: &str) -> Option<Slot> {
        parse_slot(name.strip_prefix(prefix)?.strip_prefix('-')?)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Digits only, no sign or leading zero, in range.
fn parse_slot(s: &str) -> Option<Slot> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    Slot::new(s.parse().ok()?)
}

/// The inclusive address range covering every address of `slots` (host and
/// sandbox ends), as used by firewall rules.
pub fn address_range(slots: &RangeInclusive<u16>) -> (Ipv4Addr, Ipv4Addr) {
    let first = Slot(*slots.start()).host_addr();
    let last = Slot(*slots.end()).sandbox_addr();
    (first, last)
}

/// Hands out the slots of one runtime's range. Next-fit: a freed slot is not
/// reused until the allocator has gone round the range, so a slot's kernel
/// objects have time to disappear before its names are needed again.
#[derive(Debug)]
pub struct SlotAllocator {
    range: RangeInclusive<u16>,
    used: BTreeSet<u16>,
    /// Never handed out (their host id range is the host's: see
    /// [`crate::namespace::userns::reserved_slots`]).
    reserved: BTreeSet<u16>,
    next: u16,
}

impl SlotAllocator {
    /// `range` must lie in `1..=65534` (checked by the runtime's config validation).
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let next = *range.start();
        SlotAllocator {
            range,
            used: BTreeSet::new(),
            reserved: BTreeSet::new(),
            next,
        }
    }

    /// Keeps `slots` from ever being allocated or claimed.
    pub fn reserve(&mut self, slots: impl IntoIterator<Item = u16>) {
        let range = self.range.clone();
        self.reserved
            .extend(slots.into_iter().filter(|s| range.contains(s)));
    }

    pub fn range(&self) -> &RangeInclusive<u16> {
        &self.range
    }

    /// The next free slot, or `None` when every slot is taken.
    pub fn allocate(&mut self) -> Option<Slot> {
        let (first, last) = (*self.range.start(), *self.range.end());
        let len = u32::from(last - first) + 1;
        if (self.used.len() + self.reserved.len()) as u32 >= len {
            return None;
        }
        let mut n = self.next.clamp(first, last);
        loop {
            if !self.reserved.contains(&n) && self.used.insert(n) {
                self.next = if n == last { first } else { n + 1 };
                return Some(Slot(n));
            }
            n = if n == last { first } else { n + 1 };
        }
    }

    /// Marks a specific slot as used (recovery). False if out of range or taken.
    pub fn claim(&mut self, slot: Slot) -> bool {
        self.range.contains(&slot.0) && !self.reserved.contains(&slot.0) && self.used.insert(slot.0)
    }

    pub fn is_used(&self, slot: Slot) -> bool {
        self.used.contains(&slot.0)
    }

    pub fn release(&mut self, slot: Slot) {
        self.used.remove(&slot.0);
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_slots_are_never_handed_out() {
        let mut a = SlotAllocator::new(10..=13);
        a.reserve([11, 13, 99]);
        assert!(!a.claim(Slot(11)));
        let got: Vec<u16> = std::iter::from_fn(|| a.allocate().map(Slot::get)).collect();
        assert_eq!(got, vec![10, 12]);
    }

    #[test]
    fn addressing_plan_matches_the_documented_formula() {
        let s = Slot::new(1).unwrap();
        assert_eq!(s.host_addr(), Ipv4Addr::new(10, 210, 0, 2));
        assert_eq!(s.sandbox_addr(), Ipv4Addr::new(10, 210, 0, 3));
        let s = Slot::new(200).unwrap();
        assert_eq!(s.host_addr(), Ipv4Addr::new(10, 210, 1, 144));
        let last = Slot::new(MAX_SLOT).unwrap();
        assert_eq!(last.sandbox_addr(), Ipv4Addr::new(10, 211, 255, 253));
        assert_eq!(last.host_iface(), "wv65534");
        assert!(Slot::new(0).is_none());
        assert!(Slot::new(65535).is_none());
    }

    #[test]
    fn every_slot_pair_is_a_distinct_aligned_31_inside_the_15() {
        let base = u32::from(BASE);
        let mut prev = 0;
        for n in [1u16, 2, 3, 1000, 65533, 65534] {
            let s = Slot::new(n).unwrap();
            let h = u32::from(s.host_addr());
            assert_eq!(h % 2, 0, "host end starts a /31");
            assert_eq!(u32::from(s.sandbox_addr()), h + 1);
            assert!(h > prev);
            assert_eq!(h >> (32 - BASE_PREFIX_LEN), base >> (32 - BASE_PREFIX_LEN));
            prev = h;
        }
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        let s = Slot::new(1234).unwrap();
        assert_eq!(Slot::from_host_iface(&s.host_iface()), Some(s));
        assert_eq!(
            Slot::from_netns_name("wrenn-tv", &s.netns_name("wrenn-tv")),
            Some(s)
        );
        assert_eq!(Slot::from_netns_name("wrenn", "wrenn-tv-1234"), None);
        assert_eq!(Slot::from_netns_name("wrenn", "wrenn-01"), None);
        assert_eq!(Slot::from_host_iface("wv0"), None);
        assert_eq!(Slot::from_host_iface("wv65535"), None);
        assert_eq!(Slot::from_host_iface("eth0"), None);
    }

    #[test]
    fn allocator_is_next_fit_and_reports_exhaustion() {
        let mut a = SlotAllocator::new(10..=12);
        let s10 = a.allocate().unwrap();
        let s11 = a.allocate().unwrap();
        assert_eq!((s10.get(), s11.get()), (10, 11));
        a.release(s10);
        assert_eq!(
            a.allocate().unwrap().get(),
            12,
            "freed slot not reused at once"
        );
        assert_eq!(a.allocate().unwrap().get(), 10, "wraps to the freed slot");
        assert!(a.allocate().is_none());
        assert!(!a.claim(Slot::new(11).unwrap()));
        assert!(!a.claim(Slot::new(13).unwrap()));
        a.release(Slot::new(11).unwrap());
        assert!(a.claim(Slot::new(11).unwrap()));
        assert_eq!(a.in_use(), 3);
    }

    #[test]
    fn address_range_covers_both_ends() {
        let (lo, hi) = address_range(&(1000..=1099));
        assert_eq!(lo, Slot::new(1000).unwrap().host_addr());
        assert_eq!(hi, Slot::new(1099).unwrap().sandbox_addr());
    }
}
