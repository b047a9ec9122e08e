//! The node's seccomp policy. The policy is data (`policy/seccomp.json`, Firecracker's
//! seccompiler format) where every allowed syscall carries the reason it is allowed. Two filters
//! are installed: `node`, an allowlist that answers EPERM to everything else, and
//! `clone3_enosys`, which makes clone3 answer ENOSYS so that libc falls back to clone(2), whose
//! namespace flags the allowlist can inspect.

use seccompiler::{BpfProgram, TargetArch};

pub const POLICY_JSON: &str = include_str!("../policy/seccomp.json");

/// The compiled filters, in the order they must be installed.
pub fn compile() -> Result<Vec<BpfProgram>, crate::JailError> {
    #[cfg(target_arch = "x86_64")]
    let arch = TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    let arch = TargetArch::aarch64;
    let mut map = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), arch)
        .map_err(|e| crate::JailError::Seccomp(e.to_string()))?;
    ["node", "clone3_enosys"]
        .iter()
        .map(|k| {
            map.remove(*k)
                .ok_or_else(|| crate::JailError::Seccomp(format!("filter {k} missing")))
        })
        .collect()
}

/// Packs a compiled filter into plain integers (code | jt << 16 | jf << 24 | k << 32), so the
/// daemon can compile once and hand the result to every supervisor in the node's spec.
pub fn encode(p: &BpfProgram) -> Vec<u64> {
    p.iter()
        .map(|i| i.code as u64 | (i.jt as u64) << 16 | (i.jf as u64) << 24 | (i.k as u64) << 32)
        .collect()
}

pub fn decode(v: &[u64]) -> BpfProgram {
    v.iter()
        .map(|x| seccompiler::sock_filter {
            code: *x as u16,
            jt: (*x >> 16) as u8,
            jf: (*x >> 24) as u8,
            k: (*x >> 32) as u32,
        })
        .collect()
}

/// Installs the filters on the calling thread. no_new_privs must already be set.
pub fn install(filters: &[BpfProgram]) -> Result<(), String> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_and_every_rule_has_a_reason() {
        assert_eq!(compile().unwrap().len(), 2);
        let v: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        for (name, filter) in v.as_object().unwrap() {
            for rule in filter["filter"].as_array().unwrap() {
                let c = rule["comment"].as_str().unwrap_or("");
                assert!(!c.is_empty(), "{name}: {} has no reason", rule["syscall"]);
            }
        }
    }

    #[test]
    fn encoding_round_trips() {
        for p in compile().unwrap() {
            let back = decode(&encode(&p));
            assert_eq!(back.len(), p.len());
            assert!(back
                .iter()
                .zip(&p)
                .all(|(a, b)| (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k)));
        }
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        let v: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        let allowed: Vec<&str> = v["node"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        for bad in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "bpf",
            "perf_event_open",
            "ptrace",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "open_by_handle_at",
            "reboot",
            "swapon",
            "acct",
            "io_uring_setup",
            "settimeofday",
            "clock_settime",
            "fsopen",
            "move_mount",
            "open_tree",
        ] {
            assert!(!allowed.contains(&bad), "{bad} must not be allowed");
        }
    }
}
