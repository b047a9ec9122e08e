//! The QEMU command line of a node, as seen from inside QEMU's own mount namespace, where the
//! node's files sit at fixed paths ([`crate::confine`]): `/boot/vmlinux`, `/boot/initramfs`,
//! `/vm/disk.ext4`, `/vm/agent.serial`, `/vm/qmp.sock`.
//!
//! microvm with virtio-mmio devices only: no firmware tables to scan, no PCI, no legacy
//! devices beyond the serial console. The kernel boots directly (PVH entry of `vmlinux`).

use crate::{Accel, VmSpec};

/// Kernel command line. `tsc_early_khz` and `no_timer_check` keep TCG guests from hanging in
/// timer calibration (HOST-FACTS); `mitigations=off` because every process in a node belongs
/// to the same tenant, and the boundary that matters is the hypervisor's.
pub fn cmdline(spec: &VmSpec, probe: bool) -> String {
    let mut c = String::from(
        "console=ttyS0 reboot=t panic=-1 quiet pci=off tsc_early_khz=2000000 no_timer_check \
         mitigations=off i8042.noaux i8042.nokbd i8042.nopnp cryptomgr.notests random.trust_cpu=on",
    );
    if probe {
        c += " bulkhead.probe=1";
    } else {
        c += &format!(" bulkhead.hostname={}", spec.hostname);
        if let Some(n) = &spec.net {
            c += &format!(
                " bulkhead.ip={}/{} bulkhead.gw={}",
                n.address, n.prefix_len, n.gateway
            );
            if !n.dns.is_empty() {
                let d: Vec<String> = n.dns.iter().map(|a| a.to_string()).collect();
                c += &format!(" bulkhead.dns={}", d.join(","));
            }
        }
    }
    c
}

/// A MAC address for the guest, stable for its address (locally administered, QEMU's OUI).
pub fn mac(n: &crate::GuestNet) -> String {
    let o = n.address.octets();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
}

/// A volume's image as QEMU gets it (#13, attach): an fd the supervisor opened (QEMU's own uid
/// and root reach no image), and the disk's serial the guest's agent finds it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDrive {
    /// Inherited by QEMU, one fd set: QEMU dups the member whose access mode matches each of
    /// its opens (it opens read-only first, then read-write for a writable drive), so a
    /// writable volume brings a read-only and a read-write fd, a read-only one only the first.
    pub fds: Vec<i32>,
    pub read_only: bool,
    pub serial: String,
}

/// The fd set of the `i`th volume (`-add-fd`); sets are numbered by the caller.
const FDSET_BASE: usize = 10;

/// `tap_fd`: an open tun fd already attached to the node's tap, inherited by QEMU; `volumes`:
/// the node's volumes, each a virtio disk after the root disk.
pub fn args(
    spec: &VmSpec,
    probe: bool,
    tap_fd: Option<i32>,
    volumes: &[VolumeDrive],
) -> Vec<String> {
    let mut a: Vec<String> = vec!["-M".into(), "microvm,x-option-roms=off".into()];
    match spec.accel {
        Accel::Kvm => a.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]),
        Accel::Tcg => a.extend(["-accel".into(), "tcg,tb-size=64".into()]),
    }
    a.extend(
        [
            "-m",
            &format!("{}M", spec.mem_mib),
            "-smp",
            &spec.vcpus.to_string(),
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
            "/boot/vmlinux",
            "-initrd",
            "/boot/initramfs",
            "-append",
            &cmdline(spec, probe),
            // QEMU's own seccomp filter: no new processes, no privilege changes, no obsolete
            // syscalls, no scheduler or resource games.
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]
        .map(String::from),
    );
    if !probe {
        a.extend(
            [
                "-device",
                "virtio-serial-device",
                "-chardev",
                "socket,id=agent,path=/vm/agent.serial,server=on,wait=off",
                "-device",
                "virtserialport,chardev=agent,name=agent0",
                "-qmp",
                "unix:/vm/qmp.sock,server=on,wait=off",
            ]
            .map(String::from),
        );
        match (spec.encrypted_root, spec.root_key_fd) {
            // A persistent node's disk (#13): QEMU's LUKS driver, its key read from an
            // inherited pipe (never a file, never an argument); no discard, which would tell
            // the host which blocks are free.
            (true, Some(fd)) => a.extend([
                "-object".into(),
                format!("secret,id=rootkey,file=/proc/self/fd/{fd},format=raw"),
                "-drive".into(),
                format!(
                    "id=root,file=/vm/{},format=luks,key-secret=rootkey,if=none",
                    crate::disk::LUKS_DISK
                ),
            ]),
            _ => a.extend([
                "-drive".into(),
                "id=root,file=/vm/disk.ext4,format=raw,if=none,discard=unmap".into(),
            ]),
        }
        // Its serial names it in the guest, whatever order the volumes' disks probe in.
        a.extend([
            "-device".into(),
            "virtio-blk-device,drive=root,serial=bulkhead-root".into(),
        ]);
        for (i, v) in volumes.iter().enumerate() {
            let set = FDSET_BASE + i;
            let ro = if v.read_only { "on" } else { "off" };
            // Image locks are off: the daemon decides who writes a volume (one writer at a
            // time), and QEMU's locks would also refuse a reader beside a writer.
            for fd in &v.fds {
                a.extend(["-add-fd".into(), format!("fd={fd},set={set}")]);
            }
            a.extend([
                "-drive".into(),
                format!(
                    "id=vol{i},file=/dev/fdset/{set},format=raw,if=none,read-only={ro},file.locking=off"
                ),
                "-device".into(),
                format!("virtio-blk-device,drive=vol{i},serial={}", v.serial),
            ]);
        }
        if spec.incoming {
            // The guest's state comes over QMP (`migrate-incoming`), from the memory file.
            a.extend(["-incoming".into(), "defer".into()]);
        }
        if let (Some(n), Some(fd)) = (&spec.net, tap_fd) {
            a.extend([
                "-netdev".into(),
                format!("tap,id=net0,fd={fd}"),
                "-device".into(),
                format!("virtio-net-device,netdev=net0,mac={}", mac(n)),
            ]);
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(accel: Accel) -> VmSpec {
        VmSpec {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            vm_dir: "/v".into(),
            accel,
            mem_mib: 256,
            vcpus: 2,
            hostname: "web-1".into(),
            net: None,
            incoming: false,
            encrypted_root: false,
            root_key_fd: None,
        }
    }

    #[test]
    fn networked_guests_get_a_nic_and_their_address() {
        let mut s = spec(Accel::Tcg);
        s.net = Some(crate::GuestNet {
            address: "10.1.2.6".parse().unwrap(),
            prefix_len: 30,
            gateway: "10.1.2.5".parse().unwrap(),
            dns: vec!["192.0.2.53".parse().unwrap()],
        });
        let a = args(&s, false, Some(5), &[]).join(" ");
        assert!(a.contains("-netdev tap,id=net0,fd=5"), "{a}");
        // Without the tun fd there is no NIC (the supervisor always passes one).
        assert!(!args(&s, false, None, &[]).join(" ").contains("-netdev"));
        assert!(a.contains("virtio-net-device,netdev=net0,mac=52:54:00:01:02:06"));
        assert!(a.contains("bulkhead.ip=10.1.2.6/30 bulkhead.gw=10.1.2.5 bulkhead.dns=192.0.2.53"));
    }

    #[test]
    fn tcg_args_cap_the_cache_and_sandbox_qemu() {
        let a = args(&spec(Accel::Tcg), false, None, &[]).join(" ");
        assert!(a.contains("-accel tcg,tb-size=64"), "{a}");
        assert!(a.contains("-m 256M -smp 2"));
        assert!(a.contains(
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ));
        assert!(a.contains("name=agent0"));
        assert!(a.contains("bulkhead.hostname=web-1"));
        assert!(!a.contains("bulkhead.probe"));
        // Only the node's own files: nothing else of the host is named.
        for p in a.split([' ', ',', '=']).filter(|w| w.starts_with('/')) {
            assert!(p.starts_with("/vm/") || p.starts_with("/boot/"), "{p}");
        }
    }

    #[test]
    fn kvm_and_probe_args() {
        let a = args(&spec(Accel::Kvm), true, None, &[]).join(" ");
        assert!(a.contains("-accel kvm -cpu host"));
        assert!(a.contains("bulkhead.probe=1"));
        assert!(!a.contains("/vm/"), "a probe has no disk or agent: {a}");
    }

    /// A persistent node's root disk (#13): QEMU's LUKS driver with its key from an inherited
    /// pipe; the key never appears in the arguments.
    #[test]
    fn an_encrypted_root_reads_its_key_from_a_pipe() {
        let mut s = spec(Accel::Tcg);
        s.encrypted_root = true;
        s.root_key_fd = Some(7);
        let a = args(&s, false, None, &[]).join(" ");
        assert!(
            a.contains("-object secret,id=rootkey,file=/proc/self/fd/7,format=raw"),
            "{a}"
        );
        assert!(a.contains("-drive id=root,file=/vm/disk.luks,format=luks,key-secret=rootkey,if=none -device virtio-blk-device,drive=root,serial=bulkhead-root"), "{a}");
        assert!(!a.contains("disk.ext4") && !a.contains("discard"), "{a}");
        let plain = args(&spec(Accel::Tcg), false, None, &[]).join(" ");
        assert!(plain.contains("file=/vm/disk.ext4,format=raw"), "{plain}");
        assert!(!plain.contains("secret"));
    }

    #[test]
    fn volumes_are_disks_from_inherited_fds() {
        let vols = [
            VolumeDrive {
                fds: vec![6, 7],
                read_only: false,
                serial: "aaaa".into(),
            },
            VolumeDrive {
                fds: vec![8],
                read_only: true,
                serial: "bbbb".into(),
            },
        ];
        let a = args(&spec(Accel::Tcg), false, None, &vols).join(" ");
        assert!(a.contains("-add-fd fd=6,set=10 -add-fd fd=7,set=10 -drive id=vol0,file=/dev/fdset/10,format=raw,if=none,read-only=off,file.locking=off -device virtio-blk-device,drive=vol0,serial=aaaa"), "{a}");
        assert!(a.contains("-add-fd fd=8,set=11 -drive id=vol1,file=/dev/fdset/11,format=raw,if=none,read-only=on"), "{a}");
        // The root disk stays the first (the guest's /dev/vda).
        assert!(a.find("drive=root").unwrap() < a.find("drive=vol0").unwrap());
        // No host path of an image: QEMU sees only fds.
        assert!(!a.contains(".img"));
    }
}
