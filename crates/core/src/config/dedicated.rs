//! `config.host_groups[].dedicated_cores` (#12 noisy neighbours, ADR 0027): validated against
//! the group alone here; whether the host has the cores is decided at daemon start
//! (`crate::cores::allocate`), where every group of every daemon on the host is known.
//!
//! A group's nodes share its N cores (each still capped by its `vcpu` quota), so N may exceed
//! `vcpu` (several nodes side by side) but not fall below it: a node could never use the CPUs
//! it was given.

use super::error::{key_err, ConfigError};
use super::raw::RawHostGroup;

/// Most cores one group may ask for (a sanity bound; the host's own count is checked at start).
pub const MAX_DEDICATED_CORES: u32 = 1024;

/// The group's dedicated core count; `None`: its nodes share the host's unreserved CPUs.
pub(super) fn validate(p: &str, g: &RawHostGroup, vcpu: u32) -> Result<Option<u32>, ConfigError> {
    let Some(n) = g.dedicated_cores else {
        return Ok(None);
    };
    let k = format!("{p}.dedicated_cores");
    if n == 0 {
        return Err(key_err(
            k,
            "must be at least 1: give the number of host cores this group's nodes get to themselves, or leave it out to share the host's CPUs",
        ));
    }
    if n > MAX_DEDICATED_CORES {
        return Err(key_err(k, format!("must be at most {MAX_DEDICATED_CORES}")));
    }
    if n < vcpu {
        return Err(key_err(
            k,
            format!("{n} is fewer than the group's vcpu {vcpu}: a node could never use its CPUs; give at least {vcpu}, or lower vcpu"),
        ));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: Option<u32>) -> RawHostGroup {
        RawHostGroup {
            name: "g".into(),
            dedicated_cores: n,
            ..Default::default()
        }
    }

    #[test]
    fn counts_are_checked_against_the_group() {
        assert_eq!(validate("p", &group(None), 1).unwrap(), None);
        assert_eq!(validate("p", &group(Some(3)), 2).unwrap(), Some(3));
        let e = validate("p", &group(Some(0)), 1).unwrap_err().to_string();
        assert!(
            e.contains("p.dedicated_cores") && e.contains("at least 1"),
            "{e}"
        );
        let e = validate("p", &group(Some(1)), 2).unwrap_err().to_string();
        assert!(e.contains("fewer than the group's vcpu 2"), "{e}");
        assert!(validate("p", &group(Some(5000)), 1).is_err());
    }
}
