//! Host-side names of a tenant's network objects. Every name carries the tenant's tag (its
//! host-wide unique uid slot, claimed at daemon start), so two tenants can never produce the
//! same name, and one nftables wildcard (`bv<tag>*`) matches exactly one tenant's interfaces.
//!
//! Interface names are at most 15 bytes: `bv` + 4 hex (tenant tag) + 1 hex (host group) +
//! 3 hex (slot) = 10 for a node's host-side veth, `bb` + 4 + 1 = 7 for a group's bridge.

/// Prefix of every node veth bulkhead creates (all tenants).
pub const VETH_PREFIX: &str = "bv";
/// Prefix of every bridge bulkhead creates (all tenants).
pub const BRIDGE_PREFIX: &str = "bb";
/// The node's end of its veth, inside the node's network namespace.
pub const NODE_IF: &str = "eth0";
/// Networked host groups per tenant (one hex digit in interface names).
pub const MAX_GROUPS: usize = 16;
/// Slots per host group (three hex digits in interface names).
pub const MAX_SLOTS: u32 = 4096;

/// A tenant's tag: unique on the host while its daemon runs (see `bulkhead_core::uid_slot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(pub u16);

impl Tag {
    /// `bv<tag>`: the prefix of all of this tenant's node veths.
    pub fn veth_prefix(self) -> String {
        format!("{VETH_PREFIX}{:04x}", self.0)
    }

    /// `bv<tag><group>`: the prefix of one host group's node veths.
    pub fn group_prefix(self, group: u8) -> String {
        format!("{VETH_PREFIX}{:04x}{group:x}", self.0)
    }

    pub fn veth(self, group: u8, slot: u32) -> String {
        format!("{VETH_PREFIX}{:04x}{group:x}{slot:03x}", self.0)
    }

    /// `bb<tag>`: the prefix of all of this tenant's bridges.
    pub fn bridge_prefix(self) -> String {
        format!("{BRIDGE_PREFIX}{:04x}", self.0)
    }

    pub fn bridge(self, group: u8) -> String {
        format!("{BRIDGE_PREFIX}{:04x}{group:x}", self.0)
    }

    /// `(group, slot)` of one of this tenant's node veths.
    pub fn parse_veth(self, name: &str) -> Option<(u8, u32)> {
        let rest = name.strip_prefix(&self.veth_prefix())?;
        if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let group = u8::from_str_radix(&rest[..1], 16).ok()?;
        let slot = u32::from_str_radix(&rest[1..], 16).ok()?;
        Some((group, slot))
    }

    /// The group index of one of this tenant's bridges.
    pub fn parse_bridge(self, name: &str) -> Option<u8> {
        let rest = name.strip_prefix(&self.bridge_prefix())?;
        if rest.len() != 1 {
            return None;
        }
        u8::from_str_radix(rest, 16).ok()
    }

    /// The tenant's nftables table (in family `inet`).
    pub fn table(tenant: &str) -> String {
        // Tenant names are DNS labels ([a-z0-9-]); nft identifiers take '_' but not '-'.
        format!("bulkhead_{}", tenant.replace('-', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_round_trip() {
        let t = Tag(0xbeef);
        let v = t.veth(15, 4095);
        assert_eq!(v, "bvbeefffff");
        assert!(v.len() <= 15);
        assert_eq!(t.parse_veth(&v), Some((15, 4095)));
        assert_eq!(t.parse_veth("bvbeef0001"), Some((0, 1)));
        assert_eq!(t.parse_veth("bvbeee0001"), None);
        assert_eq!(t.parse_veth("bvbeef00012"), None);
        assert_eq!(t.bridge(3), "bbbeef3");
        assert_eq!(t.parse_bridge("bbbeef3"), Some(3));
        assert_eq!(Tag::table("a3-cf"), "bulkhead_a3_cf");
        // One tenant's wildcard never matches another tenant's names.
        assert!(!Tag(0x0bee).veth(0, 1).starts_with(&t.veth_prefix()));
    }
}
