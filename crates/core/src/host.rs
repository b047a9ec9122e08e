//! A config checked against the host it is to run on: no node may ask for more memory, CPUs
//! or storage than the host has. The host's figures are read by the caller (the daemon reads
//! `/proc/meminfo`, its CPU affinity and the state directory's filesystem) and passed in, so
//! this stays pure and testable.

use crate::config::{key_err, ConfigError, TenantConfig};

/// What the host can give a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// `MemTotal` of `/proc/meminfo`, in bytes.
    pub mem_total_bytes: u64,
    /// CPUs this process may run on (affinity and cgroup quota).
    pub cpus: u32,
    /// Size of the filesystem that holds the state directory (microVM disks live there), if
    /// known.
    pub state_fs_bytes: Option<u64>,
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut it = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => n.checked_mul(1024),
        _ => None,
    }
}

pub fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

impl TenantConfig {
    /// Refuses any host group whose nodes the host could never give what they ask for. Errors
    /// name the key, the value, the host's figure and what to write instead.
    pub fn check_host(&self, host: &HostFacts) -> Result<(), ConfigError> {
        for (i, g) in self.groups.iter().enumerate() {
            let p = format!("config.host_groups[{i}]");
            if g.ram_bytes > host.mem_total_bytes {
                let (key, value) = match g.ram_key {
                    Some("ram_gb") => ("ram_gb", (g.ram_bytes >> 30).to_string()),
                    Some("ram_mb") => ("ram_mb", (g.ram_bytes >> 20).to_string()),
                    Some(k) => (k, g.ram_bytes.to_string()),
                    None => ("ram_mb", format!("{} (the default)", g.ram_bytes >> 20)),
                };
                let value = match key {
                    "ram_mb" => value,
                    _ => format!("{value} ({})", mib(g.ram_bytes)),
                };
                return Err(key_err(
                    format!("{p}.{key}"),
                    format!(
                        "{key} {value} is more than this host's memory ({}, MemTotal in /proc/meminfo): no node could ever get it; give at most ram_mb: {}",
                        mib(host.mem_total_bytes),
                        host.mem_total_bytes >> 20
                    ),
                ));
            }
            if g.vcpu > host.cpus {
                return Err(key_err(
                    format!("{p}.vcpu"),
                    format!(
                        "vcpu {} is more than the {} CPU(s) this host lets bulkhead use: give at most vcpu: {}",
                        g.vcpu, host.cpus, host.cpus
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostFacts = HostFacts {
        mem_total_bytes: 8 << 30,
        cpus: 4,
        state_fs_bytes: Some(100 << 30),
    };

    fn cfg(group: &str) -> TenantConfig {
        TenantConfig::parse(&format!(
            "config:\n  host_groups:\n    - name: t1\n{group}\n"
        ))
        .unwrap()
    }

    fn err(c: &TenantConfig) -> String {
        c.check_host(&HOST).unwrap_err().to_string()
    }

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24684092 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo(t), Some(24684092 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 99999999999999999999 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 18446744073709551615 kB\n"), None);
    }

    #[test]
    fn what_fits_passes() {
        cfg("      ram_gb: 8\n      vcpu: 4\n      storage_size: 8G")
            .check_host(&HOST)
            .unwrap();
        cfg("").check_host(&HOST).unwrap();
    }

    #[test]
    fn ram_beyond_the_host_is_refused_naming_key_value_and_host() {
        let e = err(&cfg("      ram_mb: 999999999999"));
        for want in [
            "host_groups[0].ram_mb",
            "999999999999",
            "8192 MiB",
            "at most ram_mb: 8192",
        ] {
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let e = err(&cfg("      ram_gb: 9"));
        assert!(
            e.contains("host_groups[0].ram_gb") && e.contains("ram_gb 9 "),
            "{e}"
        );
        let e = err(&cfg("      ram_bytes: 9663676416"));
        assert!(e.contains("ram_bytes 9663676416"), "{e}");
        let tiny = HostFacts {
            mem_total_bytes: 256 << 20,
            ..HOST
        };
        let e = cfg("      storage_size: 64M")
            .check_host(&tiny)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ram_mb") && e.contains("default"), "{e}");
    }

    #[test]
    fn vcpu_beyond_the_host_is_refused() {
        let e = err(&cfg("      vcpu: 5"));
        assert!(
            e.contains("host_groups[0].vcpu") && e.contains("vcpu 5") && e.contains("4 CPU"),
            "{e}"
        );
    }
}
