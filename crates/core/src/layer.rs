//! How big a jail node's writable layer may be: it is a tmpfs charged to the node's memory, so
//! its size follows from the node's RAM as much as from `storage_size`.

/// Memory a jail node keeps free of its writable layer, for the agent and a command or two
/// (enough to run `rm` on a full layer): an eighth of its RAM, between 16 and 256 MiB.
pub fn layer_reserve(ram_bytes: u64) -> u64 {
    (ram_bytes / 8).clamp(16 << 20, 256 << 20)
}

/// The size of a jail node's writable layer. It is a tmpfs charged to the node's memory, so it
/// holds at most its RAM less [`layer_reserve`] (and never less than half its RAM), whatever
/// `storage_size` says: a full layer then answers ENOSPC (507) and never starves the agent.
/// microVM nodes have a disk of `storage_size` instead.
pub fn jail_layer_bytes(storage_bytes: u64, ram_bytes: u64) -> u64 {
    let cap = ram_bytes
        .saturating_sub(layer_reserve(ram_bytes))
        .max(ram_bytes / 2);
    storage_bytes.min(cap)
}

#[cfg(test)]
mod tests {
    #[test]
    fn jail_layer_fits_beside_the_agent() {
        use super::jail_layer_bytes as l;
        // Defaults: 1G of storage_size on 512 MiB of RAM holds 448 MiB.
        assert_eq!(l(1 << 30, 512 << 20), 448 << 20);
        assert_eq!(l(16 << 20, 256 << 20), 16 << 20);
        assert_eq!(l(25 << 30, 4 << 30), (4 << 30) - (256 << 20));
        assert_eq!(l(1 << 30, 16 << 20), 8 << 20);
    }
}
