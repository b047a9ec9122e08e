//! Dedicated cores (`dedicated_cores: N` per host group, ADR 0027): CPU lists in the kernel's
//! format and the pure decision of which host CPUs each group gets. The daemon applies it
//! (`daemon/src/cores.rs`: the host-wide claim files, the cgroups).
//!
//! Invariants: a core belongs to at most one (tenant, group) on the host; at least one of the
//! host's CPUs stays outside every reservation (the daemon, the supervisors and every node
//! without dedicated cores run there); a group that held cores keeps the same ones when it
//! asks again (its running nodes stay where they are).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A set of CPUs, written like `cpuset.cpus`: `0-3,6`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuList(pub BTreeSet<u32>);

impl CpuList {
    /// Parses the kernel's list format (`""` is the empty set).
    pub fn parse(s: &str) -> Result<CpuList, String> {
        let mut set = BTreeSet::new();
        for part in s.trim().split(',').filter(|p| !p.trim().is_empty()) {
            let bad = || format!("{s:?} is not a CPU list like 0-3,6");
            let (a, b) = match part.trim().split_once('-') {
                Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                None => {
                    let a: u32 = part.trim().parse().map_err(|_| bad())?;
                    (a, a)
                }
            };
            if a > b || b > 1 << 16 {
                return Err(bad());
            }
            set.extend(a..=b);
        }
        Ok(CpuList(set))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn minus(&self, other: &CpuList) -> CpuList {
        CpuList(self.0.difference(&other.0).copied().collect())
    }

    pub fn intersects(&self, other: &CpuList) -> bool {
        !self.0.is_disjoint(&other.0)
    }
}

impl fmt::Display for CpuList {
    /// Ranges where CPUs follow each other: `0-3,6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end = it.next().unwrap_or(end);
            }
            parts.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
        }
        f.write_str(&parts.join(","))
    }
}

/// Who holds a reservation: `tenant/group`.
pub type Owner = String;

/// A reservation the pool cannot give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PoolError(pub String);

/// Picks each request's cores. `host` is every CPU the host offers; `held` who holds which
/// core now (every daemon on the host); `requests` this daemon's groups and their counts.
/// A group keeps the cores it holds (up to its count) and takes more from the highest free
/// numbers (CPU 0 tends to carry the host's interrupts); whatever a listed owner held beyond
/// its count is released. Refuses when the requests do not fit beside the other owners' and
/// one core outside every reservation.
pub fn allocate(
    host: &CpuList,
    held: &BTreeMap<u32, Owner>,
    requests: &[(Owner, u32)],
) -> Result<BTreeMap<Owner, CpuList>, PoolError> {
    let ours: BTreeSet<&str> = requests.iter().map(|(o, _)| o.as_str()).collect();
    let others: BTreeMap<u32, &str> = held
        .iter()
        .filter(|(c, o)| !ours.contains(o.as_str()) && host.0.contains(c))
        .map(|(c, o)| (*c, o.as_str()))
        .collect();
    let wanted: u64 = requests.iter().map(|(_, n)| u64::from(*n)).sum();
    let free_for_us = host.len().saturating_sub(others.len()).saturating_sub(1);
    if wanted > free_for_us as u64 {
        let asks: Vec<String> = requests.iter().map(|(o, n)| format!("{o} {n}")).collect();
        let mut by_owner: BTreeMap<&str, CpuList> = BTreeMap::new();
        for (c, o) in &others {
            by_owner.entry(o).or_default().0.insert(*c);
        }
        let taken: Vec<String> = by_owner
            .iter()
            .map(|(o, l)| format!("{o} holds {l}"))
            .collect();
        return Err(PoolError(format!(
            "dedicated_cores: the host groups ask for {wanted} cores ({}) but this host offers {} CPUs ({host}){}, and one CPU always stays outside every reservation for the daemon and the nodes without dedicated cores, so at most {free_for_us} can be reserved: lower dedicated_cores, or stop the daemon that holds cores",
            asks.join(", "),
            host.len(),
            if taken.is_empty() {
                String::new()
            } else {
                format!(" of which {} are reserved by other daemons ({})", others.len(), taken.join("; "))
            },
        )));
    }
    let mut out: BTreeMap<Owner, CpuList> = BTreeMap::new();
    let mut used: BTreeSet<u32> = others.keys().copied().collect();
    // First what each group already holds (so its running nodes keep their cores).
    for (o, n) in requests {
        let mine = out.entry(o.clone()).or_default();
        for (c, h) in held {
            if h == o && host.0.contains(c) && mine.len() < *n as usize {
                mine.0.insert(*c);
                used.insert(*c);
            }
        }
    }
    // Then the highest free cores, keeping the lowest free one out of every reservation.
    for (o, n) in requests {
        while out[o].len() < *n as usize {
            let c = host
                .0
                .iter()
                .rev()
                .find(|c| !used.contains(c))
                .copied()
                .ok_or_else(|| PoolError("dedicated_cores: no free core left".into()))?;
            used.insert(c);
            out.get_mut(o).map(|l| l.0.insert(c));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> CpuList {
        CpuList::parse(s).unwrap()
    }

    #[test]
    fn lists_parse_and_print_like_the_kernel() {
        assert_eq!(l("0-3,6").to_string(), "0-3,6");
        assert_eq!(l("5,1,2,3").to_string(), "1-3,5");
        assert_eq!(l("\n").to_string(), "");
        assert_eq!(l("0-1").minus(&l("1")).to_string(), "0");
        for bad in ["a", "3-1", "1-", "0-99999999"] {
            assert!(CpuList::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn groups_get_the_highest_free_cores_and_one_stays_shared() {
        let host = l("0-3");
        let r = allocate(
            &host,
            &BTreeMap::new(),
            &[("t/a".into(), 2), ("t/b".into(), 1)],
        )
        .unwrap();
        assert_eq!(r["t/a"].to_string(), "2-3");
        assert_eq!(r["t/b"].to_string(), "1");
        // Four cores asked of four: one must stay outside.
        let e = allocate(&host, &BTreeMap::new(), &[("t/a".into(), 4)]).unwrap_err();
        assert!(e.0.contains("offers 4 CPUs (0-3)"), "{e}");
        assert!(e.0.contains("at most 3 can be reserved"), "{e}");
        assert!(e.0.contains("t/a 4"), "{e}");
    }

    #[test]
    fn two_cpu_host_reserves_one() {
        let host = l("0-1");
        let r = allocate(&host, &BTreeMap::new(), &[("t/a".into(), 1)]).unwrap();
        assert_eq!(r["t/a"].to_string(), "1");
        assert!(allocate(&host, &BTreeMap::new(), &[("t/a".into(), 2)]).is_err());
        assert!(allocate(
            &host,
            &BTreeMap::new(),
            &[("t/a".into(), 1), ("u/b".into(), 1)]
        )
        .is_err());
    }

    #[test]
    fn other_owners_are_respected_and_own_cores_kept() {
        let host = l("0-3");
        let held: BTreeMap<u32, Owner> = [
            (3, "x/g".to_string()),
            (1, "t/a".to_string()),
            (2, "t/old".to_string()),
        ]
        .into_iter()
        .collect();
        // t/a keeps core 1, takes 2 (t/old is not asked for by this daemon's… it is another
        // owner, so 2 is taken): only 0 would be left, which must stay shared.
        let e = allocate(&host, &held, &[("t/a".into(), 2)]).unwrap_err();
        assert!(e.0.contains("x/g holds 3"), "{e}");
        let r = allocate(&host, &held, &[("t/a".into(), 1)]).unwrap();
        assert_eq!(r["t/a"].to_string(), "1");
        // Without the stale owner, t/a grows from the core it holds.
        let held: BTreeMap<u32, Owner> = [(3, "x/g".to_string()), (1, "t/a".to_string())]
            .into_iter()
            .collect();
        let r = allocate(&host, &held, &[("t/a".into(), 2)]).unwrap();
        assert_eq!(r["t/a"].to_string(), "1-2");
        // A smaller count keeps a subset of what it held.
        let held: BTreeMap<u32, Owner> = [(2, "t/a".to_string()), (3, "t/a".to_string())]
            .into_iter()
            .collect();
        let r = allocate(&host, &held, &[("t/a".into(), 1)]).unwrap();
        assert_eq!(r["t/a"].to_string(), "2");
    }
}
