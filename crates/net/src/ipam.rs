//! Address plan of a host group: which addresses slot N of a range gets. Pure arithmetic.
//!
//! - isolated: the range is cut into /30s; slot N is the Nth /30: network, the gateway (host
//!   end of the node's veth), the node, broadcast. A /22 holds 256 nodes.
//! - bridge: the range is one subnet on the group's bridge: the first host address is the
//!   gateway (on the bridge), slot N is the (N+2)th address, the last is broadcast.

use crate::names::MAX_SLOTS;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Isolated,
    Bridge,
}

/// A node's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// The node's gateway: the host end of its veth (isolated) or the bridge (bridge).
    pub gateway: Ipv4Addr,
    pub node: Ipv4Addr,
    pub prefix_len: u8,
}

/// A validated IPv4 range for one host group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    pub layout: Layout,
}

impl Range {
    /// Checks that `network/prefix_len` can hold at least one node in `layout`.
    pub fn new(network: Ipv4Addr, prefix_len: u8, layout: Layout) -> Result<Self, String> {
        let max = match layout {
            Layout::Isolated => 30,
            Layout::Bridge => 30,
        };
        if prefix_len > max {
            return Err(format!(
                "a /{prefix_len} holds no node: use a prefix of /{max} or shorter (a /22 holds 256 nodes)"
            ));
        }
        let mask = u32::MAX.checked_shl(32 - prefix_len as u32).unwrap_or(0);
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "{network}/{prefix_len} has host bits set: use {}/{prefix_len}",
                Ipv4Addr::from(u32::from(network) & mask)
            ));
        }
        Ok(Range {
            network,
            prefix_len,
            layout,
        })
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix_len as u32)
    }

    /// How many nodes the range holds (never more than [`MAX_SLOTS`]).
    pub fn slots(&self) -> u32 {
        let n = match self.layout {
            Layout::Isolated => self.size() / 4,
            Layout::Bridge => self.size() - 3,
        };
        n.min(MAX_SLOTS as u64) as u32
    }

    pub fn addressing(&self, slot: u32) -> Option<Addressing> {
        if slot >= self.slots() {
            return None;
        }
        let base = u32::from(self.network);
        Some(match self.layout {
            Layout::Isolated => Addressing {
                gateway: Ipv4Addr::from(base + 4 * slot + 1),
                node: Ipv4Addr::from(base + 4 * slot + 2),
                prefix_len: 30,
            },
            Layout::Bridge => Addressing {
                gateway: Ipv4Addr::from(base + 1),
                node: Ipv4Addr::from(base + 2 + slot),
                prefix_len: self.prefix_len,
            },
        })
    }

    /// The slot whose node address is `node`.
    pub fn slot_of(&self, node: Ipv4Addr) -> Option<u32> {
        let off = u32::from(node).checked_sub(u32::from(self.network))?;
        let slot = match self.layout {
            Layout::Isolated if off % 4 == 2 => off / 4,
            Layout::Isolated => return None,
            Layout::Bridge => off.checked_sub(2)?,
        };
        (slot < self.slots()).then_some(slot)
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let off = u32::from(a).wrapping_sub(u32::from(self.network)) as u64;
        u32::from(a) >= u32::from(self.network) && off < self.size()
    }

    pub fn overlaps(&self, other_net: Ipv4Addr, other_len: u8) -> bool {
        let len = self.prefix_len.min(other_len) as u32;
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        u32::from(self.network) & mask == u32::from(other_net) & mask
    }

    /// The lowest slot not in `used`.
    pub fn first_free(&self, used: &std::collections::HashSet<u32>) -> Option<u32> {
        self.next_free(used, 0)
    }

    /// The first slot not in `used` at or after `from`, wrapping around. Allocating after the
    /// last slot handed out (rather than the lowest) keeps a freed address unused for as long
    /// as the range allows, so late packets of a deleted node's flows (conntrack entries
    /// outlive it) find no new node there.
    pub fn next_free(&self, used: &std::collections::HashSet<u32>, from: u32) -> Option<u32> {
        let n = self.slots();
        (0..n)
            .map(|i| (from % n.max(1) + i) % n)
            .find(|s| !used.contains(s))
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, l: Layout) -> Range {
        let (a, p) = s.split_once('/').unwrap();
        Range::new(a.parse().unwrap(), p.parse().unwrap(), l).unwrap()
    }

    #[test]
    fn isolated_slash22_is_256_slash30s() {
        let g = r("169.254.100.0/22", Layout::Isolated);
        assert_eq!(g.slots(), 256);
        let a = g.addressing(0).unwrap();
        assert_eq!(a.gateway, Ipv4Addr::new(169, 254, 100, 1));
        assert_eq!(a.node, Ipv4Addr::new(169, 254, 100, 2));
        assert_eq!(a.prefix_len, 30);
        let last = g.addressing(255).unwrap();
        assert_eq!(last.node, Ipv4Addr::new(169, 254, 103, 254));
        assert_eq!(g.addressing(256), None);
        assert_eq!(g.slot_of(last.node), Some(255));
        assert_eq!(g.slot_of(last.gateway), None);
        assert_eq!(g.slot_of(Ipv4Addr::new(169, 254, 104, 2)), None);
    }

    #[test]
    fn bridge_skips_network_gateway_broadcast() {
        let g = r("10.9.0.0/24", Layout::Bridge);
        assert_eq!(g.slots(), 253);
        let a = g.addressing(0).unwrap();
        assert_eq!(
            (a.gateway, a.node, a.prefix_len),
            ("10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap(), 24)
        );
        assert_eq!(
            g.addressing(252).unwrap().node,
            Ipv4Addr::new(10, 9, 0, 254)
        );
        assert_eq!(g.slot_of(Ipv4Addr::new(10, 9, 0, 254)), Some(252));
        assert_eq!(g.slot_of(Ipv4Addr::new(10, 9, 0, 1)), None);
    }

    #[test]
    fn bad_ranges_say_why() {
        let e = Range::new("10.0.0.1".parse().unwrap(), 24, Layout::Isolated).unwrap_err();
        assert!(e.contains("use 10.0.0.0/24"), "{e}");
        assert!(Range::new("10.0.0.0".parse().unwrap(), 31, Layout::Isolated).is_err());
        assert_eq!(r("10.0.0.0/8", Layout::Isolated).slots(), MAX_SLOTS);
    }

    #[test]
    fn overlap_and_first_free() {
        let g = r("10.0.0.0/22", Layout::Isolated);
        assert!(g.overlaps("10.0.3.0".parse().unwrap(), 24));
        assert!(g.overlaps("10.0.0.0".parse().unwrap(), 8));
        assert!(!g.overlaps("10.0.4.0".parse().unwrap(), 22));
        assert!(g.contains("10.0.3.255".parse().unwrap()));
        assert!(!g.contains("10.0.4.0".parse().unwrap()));
        let used = [0, 1, 3].into_iter().collect();
        assert_eq!(g.first_free(&used), Some(2));
        assert_eq!(g.next_free(&used, 3), Some(4));
        assert_eq!(g.next_free(&used, 255), Some(255));
        let full: std::collections::HashSet<u32> = (1..256).collect();
        assert_eq!(g.next_free(&full, 7), Some(0), "wraps around");
    }
}
