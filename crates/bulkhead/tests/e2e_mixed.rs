//! One tenant, two drivers: a host group may name its own `hypervisor` (here a microVM group
//! beside the tenant's jail groups). Each node runs under its group's driver, and the
//! tenant's nodes list, exec and delete the same way whichever driver runs them. TCG here:
//! slow by nature, so one test.

mod common;

use common::netlab::Netns;
use common::{privileged, Daemon};

#[test]
fn a_host_group_runs_its_own_driver() {
    if !privileged() {
        return;
    }
    let netns = Netns::new();
    let yaml = "config:\n  tenant: TENANT\n  hypervisor: jail\n  host_groups:\n    - name: TENANT\n      ram_mb: 128\n    - name: TENANTvm\n      hypervisor: qemu\n      ram_mb: 256\n      storage_size: 256M\n  graceful_shutdown: false\n  api:\n    bind_address: SOCKET\n";
    let d = Daemon::start_in(&netns.path(), "mix", yaml);
    let jail = d.vm_ok(&["add", &d.tenant]).trim().to_string();
    let vm = d
        .vm_ok(&["add", &format!("{}vm", d.tenant), "--timeout", "180s"])
        .trim()
        .to_string();
    let describe = |n: &str| -> serde_json::Value {
        serde_json::from_str(&d.vm_ok(&["describe", n, "--json"])).unwrap()
    };
    assert_eq!(describe(&jail)["driver"], "jail");
    assert_eq!(describe(&vm)["driver"], "qemu");
    // The jail shares the host's kernel; the microVM boots its own.
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(d.sh(&jail, "uname -r").1.trim(), host_kernel.trim());
    assert_ne!(d.sh(&vm, "uname -r").1.trim(), host_kernel.trim());
    let list = d.vm_ok(&["list", "--json"]);
    assert!(list.contains(&jail) && list.contains(&vm), "{list}");
    d.vm_ok(&["delete", &vm]);
    d.stop_and_assert_clean();
}
