//! The drivers of this build, by their name in `hypervisor:`. The only place that lists them:
//! the daemon opens the tenant's driver from this registry, the supervisor starts a node with
//! the driver its spec names, and `validate` checks a config against it. A new driver is one
//! crate implementing `bulkhead_driver::{Driver, Launcher}` plus one line here
//! (docs/drivers.md, "Adding a driver").

use bulkhead_driver::{Launchers, Registry};

/// Every driver this build has.
pub fn registry() -> Registry {
    Registry::new(vec![
        bulkhead_jail::driver::ENTRY,
        bulkhead_vm::driver::ENTRY,
    ])
}

/// The same drivers' supervisor sides, for `bulkhead-supervisor` (which must not link the
/// daemon sides; a test checks the two lists agree).
pub const LAUNCHERS: Launchers = Launchers(&[
    (
        bulkhead_jail::driver::ENTRY.name,
        bulkhead_jail::driver::ENTRY.launcher,
    ),
    (
        bulkhead_vm::driver::ENTRY.name,
        bulkhead_vm::driver::ENTRY.launcher,
    ),
]);

#[cfg(test)]
mod tests {
    use bulkhead_core::{HostFacts, TenantConfig};

    const HOST: HostFacts = HostFacts {
        mem_total_bytes: 8 << 30,
        cpus: 4,
        state_fs_bytes: Some(100 << 30),
    };

    fn cfg(hypervisor: &str) -> TenantConfig {
        TenantConfig::parse(&format!(
            "config:\n  hypervisor: {hypervisor}\n  host_groups:\n    - name: t1\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_supervisor_has_the_launcher_of_every_driver() {
        assert_eq!(super::LAUNCHERS.names(), super::registry().names());
        let e = super::LAUNCHERS.get("xen").err().unwrap().to_string();
        assert!(e.contains("\"xen\"") && e.contains("\"jail\""), "{e}");
    }

    #[test]
    fn names_select_their_driver() {
        let r = super::registry();
        assert_eq!(r.names(), ["jail", "qemu"]);
        for name in r.names() {
            assert_eq!(r.get(name).unwrap().name, name);
            assert_eq!(r.check(&cfg(name), &HOST).unwrap()[0].name, name);
        }
    }

    #[test]
    fn an_unknown_hypervisor_is_refused_naming_the_key_and_the_known_ones() {
        let e = super::registry()
            .check(&cfg("xen"), &HOST)
            .unwrap_err()
            .to_string();
        for want in ["config.hypervisor", "\"xen\"", "\"jail\"", "\"qemu\""] {
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert!(super::registry().warnings(&cfg("xen")).is_empty());
    }

    /// The registry runs the common host checks and then the driver's own: a group that fits
    /// a jail but not a microVM.
    #[test]
    fn each_driver_checks_its_own_limits() {
        let r = super::registry();
        let small = |h: &str| {
            TenantConfig::parse(&format!(
                "config:\n  hypervisor: {h}\n  host_groups:\n    - name: t1\n      ram_mb: 64\n      storage_size: 32M\n"
            ))
            .unwrap()
        };
        r.check(&small("jail"), &HOST).unwrap();
        let e = r.check(&small("qemu"), &HOST).unwrap_err().to_string();
        assert!(
            e.contains("host_groups[0].ram_mb") && e.contains("128 MiB"),
            "{e}"
        );
        let big = TenantConfig::parse(
            "config:\n  hypervisor: jail\n  host_groups:\n    - name: t1\n      vcpu: 5\n",
        )
        .unwrap();
        let e = r.check(&big, &HOST).unwrap_err().to_string();
        assert!(e.contains("host_groups[0].vcpu"), "{e}");
    }

    /// A host group may name its own driver: each driver checks its own groups, and an error
    /// names the group's place in the whole config.
    #[test]
    fn a_host_group_may_override_the_tenants_driver() {
        let r = super::registry();
        let mixed = |ram: u32| {
            TenantConfig::parse(&format!(
                "config:\n  hypervisor: jail\n  host_groups:\n    - name: j\n      ram_mb: 64\n    - name: v\n      hypervisor: qemu\n      ram_mb: {ram}\n      storage_size: 256M\n"
            ))
            .unwrap()
        };
        let ok = mixed(256);
        assert_eq!(ok.drivers(), ["jail", "qemu"]);
        let names: Vec<_> = r
            .check(&ok, &HOST)
            .unwrap()
            .iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["jail", "qemu"]);
        let e = r.check(&mixed(64), &HOST).unwrap_err().to_string();
        assert!(e.contains("host_groups[1].ram_mb"), "{e}");
        let xen = TenantConfig::parse(
            "config:\n  host_groups:\n    - name: a\n    - name: b\n      hypervisor: xen\n",
        )
        .unwrap();
        let e = r.check(&xen, &HOST).unwrap_err().to_string();
        assert!(
            e.contains("config.host_groups[1].hypervisor") && e.contains("xen"),
            "{e}"
        );
    }

    /// `policy.drivers` (#12) names drivers of this build, like `hypervisor`.
    #[test]
    fn policy_drivers_are_names_the_registry_knows() {
        let r = super::registry();
        let with = |d: &str| {
            TenantConfig::parse(&format!(
                "config:\n  host_groups:\n    - name: t1\n  policy:\n    drivers: [jail, {d}]\n"
            ))
            .unwrap()
        };
        r.check(&with("qemu"), &HOST).unwrap();
        let e = r.check(&with("kvm"), &HOST).unwrap_err().to_string();
        assert!(
            e.contains("config.policy.drivers[1]")
                && e.contains("\"kvm\"")
                && e.contains("\"qemu\""),
            "{e}"
        );
    }
}
