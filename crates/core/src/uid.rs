//! Host uid ranges: one slot of 65536 uids per tenant, from its name.

/// Size of every tenant's host uid range: uids 0..65536 inside a node.
pub const UID_COUNT: u32 = 65536;

/// The first host uid of a tenant's range. Derived from the tenant's name so that every daemon
/// of the same tenant agrees without coordination; slots are 65536 wide and start at 2^20,
/// above the uids and subuid ranges that distributions hand out by default. The daemon claims
/// the slot in a host-wide registry at start, so two tenants whose names land in one slot are
/// refused rather than silently sharing uids.
pub fn uid_base(tenant: &str) -> u32 {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in tenant.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    let slot = 16 + (h % 16_000);
    slot * UID_COUNT
}

#[cfg(test)]
mod tests {
    #[test]
    fn uid_bases_are_stable_and_distinct() {
        let a = super::uid_base("a3cf");
        assert_eq!(a, super::uid_base("a3cf"));
        assert_ne!(a, super::uid_base("e7d1"));
        assert!(a >= 1 << 20);
        assert_eq!(a % super::UID_COUNT, 0);
        assert!(a.checked_add(super::UID_COUNT).is_some());
    }
}
