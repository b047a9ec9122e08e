//! Dedicated cores and the daemon's protected cgroup on this host (#12 noisy neighbours,
//! ADR 0027). The decision is `bulkhead_core::cores::allocate`; this module applies it:
//!
//! - a host-wide registry, `/run/bulkhead/cores/<cpu>` holding `tenant/group`, claimed under an
//!   flock on the directory (held only once the locked directory is still the one at the path:
//!   the last release removes it) so that daemons starting together never take the same core;
//!   it survives a crash (the same group takes its cores again, its pinned nodes stay put) and
//!   goes with a reboot; a start that fails keeps only the claims of groups with nodes left;
//! - at a claim, this daemon's nodes are pinned to exactly their group's cores (a group given
//!   fewer cores leaves none behind); every other cpuset on the host (any daemon's) that a
//!   change of the reservations concerns is moved: a shared node never keeps a core a group
//!   just reserved, and gets the freed ones;
//! - the daemon enters `bulkhead/_daemon` (higher weight, the unreserved CPUs) before it starts
//!   any supervisor, and leaves it at stop.
//!
//! Invariant: a node with dedicated cores runs on its group's cores only; every other node of
//! every tenant, the daemon and the supervisors run on the host's CPUs minus every reservation.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use bulkhead_core::cores::{allocate, CpuList, Owner};
use bulkhead_core::DaemonConfig;
use bulkhead_sandbox::{fair, Cgroups, NodeCgroup};

use crate::start_error::{io, StartError};

/// Host-wide registry of reserved cores, shared by every daemon on the host.
pub const CORES_REGISTRY: &str = "/run/bulkhead/cores";

/// One node of this daemon's tenants, as [`Cores::claim`] pins it.
pub struct OwnNode {
    pub tenant: String,
    pub group: String,
    /// The node's cgroup id (`bulkhead/<tenant>/<cgroup>`).
    pub cgroup: String,
}

/// This daemon's reservations and its place in the cgroup tree.
pub struct Cores {
    cgroups: Cgroups,
    registry: PathBuf,
    /// The host's CPUs; `None` where the cpuset controller is not in use (nothing to pin).
    host: Option<CpuList>,
    /// What this daemon asks for: `tenant/group` → count.
    requests: Vec<(Owner, u32)>,
    /// `tenant/group` → the cores it holds.
    dedicated: RwLock<BTreeMap<Owner, CpuList>>,
    /// Where the daemon was before it entered `bulkhead/_daemon`.
    origin: Mutex<Option<NodeCgroup>>,
}

fn owner(tenant: &str, group: &str) -> Owner {
    format!("{tenant}/{group}")
}

/// An flock on the registry, held while it is read and written (the file is kept open for it).
struct RegistryLock(#[allow(dead_code)] std::fs::File);

impl RegistryLock {
    fn take(dir: &Path) -> Result<Self, StartError> {
        // The directory itself is locked: no lock file is left behind. A holder may remove it
        // (empty) before it unlocks, so the lock we get can be on a directory that is gone, or
        // no longer the one at `dir` (another daemon made a new one and locks that): we hold
        // the registry only once the locked directory is still the one at `dir`.
        let mut tries = 0;
        loop {
            let f = loop {
                std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
                match std::fs::File::open(dir) {
                    Ok(f) => break f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 100 => tries += 1,
                    Err(e) => return Err(io(format!("opening {}", dir.display()))(e)),
                }
            };
            // SAFETY: flock on a descriptor we own; released when the file closes.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io("locking the core registry")(
                    std::io::Error::last_os_error(),
                ));
            }
            if same_inode(&f, dir) {
                return Ok(RegistryLock(f));
            }
            tries += 1;
            if tries >= 100 {
                return Err(StartError::Refused(format!(
                    "the core registry {} keeps being removed and made again while we lock it: retry the start",
                    dir.display()
                )));
            }
        }
    }
}

/// Whether the open `f` is the directory at `path` now (not one removed since it was opened).
fn same_inode(f: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Who holds which core now, as the registry says.
fn read_registry(dir: &Path) -> BTreeMap<u32, Owner> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let cpu = e.file_name().to_str()?.parse().ok()?;
            let who = std::fs::read_to_string(e.path()).ok()?;
            Some((cpu, who.trim().to_string()))
        })
        .collect()
}

impl Cores {
    /// What `cfg`'s host groups ask for; refuses a config this host cannot pin (no cpuset
    /// controller) before anything is touched.
    pub fn new(cfg: &DaemonConfig, cgroups: &Cgroups) -> Result<Cores, StartError> {
        Self::at(cfg, cgroups, PathBuf::from(CORES_REGISTRY))
    }

    fn at(cfg: &DaemonConfig, cgroups: &Cgroups, registry: PathBuf) -> Result<Cores, StartError> {
        let requests: Vec<(Owner, u32)> = cfg
            .tenants
            .iter()
            .flat_map(|t| {
                t.groups
                    .iter()
                    .filter_map(|g| Some((owner(&t.tenant, &g.name), g.dedicated_cores?)))
            })
            .collect();
        let host = cgroups
            .host_cpus()
            .and_then(|c| CpuList::parse(&c).ok())
            .filter(|c| !c.is_empty());
        if host.is_none() && !requests.is_empty() {
            return Err(StartError::Refused(format!(
                "dedicated_cores ({}) needs the cpuset cgroup controller, which this host's cgroups ({}) do not offer: mount it (v1) or enable it (v2), or remove dedicated_cores",
                requests.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(", "),
                cgroups.describe()
            )));
        }
        let cores = Cores {
            cgroups: cgroups.clone(),
            registry,
            host,
            requests,
            dedicated: Default::default(),
            origin: Mutex::new(None),
        };
        // The refusal a start can give early, from the registry as it is now (the claim
        // itself comes once the daemon holds its tenants).
        if let Some(h) = &cores.host {
            let held = cores.held_by_others(&read_registry(&cores.registry), cfg);
            allocate(h, &held, &cores.requests).map_err(|e| StartError::Refused(e.0))?;
        }
        Ok(cores)
    }

    /// The registry without this daemon's tenants' entries of groups that no longer ask (this
    /// daemon holds those tenants, so nothing else can be using them).
    fn held_by_others(
        &self,
        held: &BTreeMap<u32, Owner>,
        cfg: &DaemonConfig,
    ) -> BTreeMap<u32, Owner> {
        held.iter()
            .filter(|(_, o)| {
                let ours = cfg
                    .tenants
                    .iter()
                    .any(|t| o.starts_with(&format!("{}/", t.tenant)));
                !ours || self.requests.iter().any(|(r, _)| r == *o)
            })
            .map(|(c, o)| (*c, o.clone()))
            .collect()
    }

    /// The CPUs no group on the host reserved.
    fn shared(&self, held: &BTreeMap<u32, Owner>) -> Option<CpuList> {
        let h = self.host.as_ref()?;
        Some(h.minus(&CpuList(held.keys().copied().collect())))
    }

    /// Moves the daemon into `bulkhead/_daemon`, before any supervisor starts.
    pub fn enter(&self) -> Result<(), StartError> {
        let shared = self
            .shared(&read_registry(&self.registry))
            .map(|s| s.to_string());
        let origin = self.cgroups.enter_daemon_group(shared.as_deref())?;
        *self.origin.lock().unwrap_or_else(|e| e.into_inner()) = Some(origin);
        Ok(())
    }

    /// Claims this daemon's cores host-wide (once it holds its tenants), releases what its
    /// tenants' groups no longer ask for, pins this daemon's nodes (`own`, its tenants' nodes
    /// now) to exactly their group's cores or the shared ones, and moves every other shared
    /// cpuset on the host off the reserved cores. A claim that fails leaves the registry as it
    /// was.
    pub fn claim(&self, cfg: &DaemonConfig, own: &[OwnNode]) -> Result<(), StartError> {
        let Some(host) = &self.host else {
            return Ok(());
        };
        let _lock = RegistryLock::take(&self.registry)?;
        let before = read_registry(&self.registry);
        let held = self.held_by_others(&before, cfg);
        let got = match allocate(host, &held, &self.requests) {
            Ok(g) => g,
            Err(e) => {
                let _ = std::fs::remove_dir(&self.registry);
                return Err(StartError::Refused(e.0));
            }
        };
        // First the new claims; on a failure the ones written so far go again.
        let mut fresh = CpuList::default();
        for (o, list) in &got {
            for cpu in &list.0 {
                if before.get(cpu) != Some(o) {
                    let f = self.registry.join(cpu.to_string());
                    if let Err(e) = std::fs::write(&f, format!("{o}\n")) {
                        let _ = std::fs::remove_file(&f);
                        for c in &fresh.0 {
                            let _ = std::fs::remove_file(self.registry.join(c.to_string()));
                        }
                        let _ = std::fs::remove_dir(&self.registry);
                        return Err(io("claiming a dedicated core")(e));
                    }
                    fresh.0.insert(*cpu);
                }
            }
            tracing::info!(group = %o, cores = %list, "dedicated cores reserved");
        }
        // Then stale entries of our tenants, and cores a group holds beyond its count, go.
        for (cpu, o) in &before {
            let ours = cfg
                .tenants
                .iter()
                .any(|t| o.starts_with(&format!("{}/", t.tenant)));
            if ours && !got.get(o).is_some_and(|l| l.0.contains(cpu)) {
                let _ = std::fs::remove_file(self.registry.join(cpu.to_string()));
            }
        }
        *self.dedicated.write().unwrap_or_else(|e| e.into_inner()) = got;
        self.rebalance(&read_registry(&self.registry), &fresh, own);
        // No reservation on the host: leave no empty registry behind.
        let _ = std::fs::remove_dir(&self.registry);
        Ok(())
    }

    /// Moves cpusets after a change of the reservations. This daemon's nodes (`own`) get
    /// exactly their group's cores, or the CPUs no group reserved. Every other cpuset on the
    /// host (other daemons' nodes, `_daemon`) moves to the unreserved CPUs when it holds a core
    /// just reserved (`fresh`: its owner no longer claims it) or lies outside every
    /// reservation (so it gets freed cores back); other daemons' pinned nodes sit on cores
    /// their own claims keep, and stay.
    fn rebalance(&self, held: &BTreeMap<u32, Owner>, fresh: &CpuList, own: &[OwnNode]) {
        let Some(shared) = self.shared(held) else {
            return;
        };
        let reserved = CpuList(held.keys().copied().collect());
        let dedicated = self.dedicated.read().unwrap_or_else(|e| e.into_inner());
        for dir in self.cgroups.all_cpusets() {
            let Ok(cur) = CpuList::parse(&fair::read_cpus(&dir)) else {
                continue;
            };
            let name = |p: Option<&Path>| {
                p.and_then(|p| p.file_name())
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let (tenant, id) = (name(dir.parent()), name(Some(&dir)));
            let mine = own.iter().find(|n| n.tenant == tenant && n.cgroup == id);
            let want = match mine {
                Some(n) => match dedicated.get(&owner(&n.tenant, &n.group)) {
                    Some(l) => l,
                    None => &shared,
                },
                None => {
                    let move_it = cur.is_empty()
                        || cur.intersects(fresh)
                        || (!cur.intersects(&reserved) && cur != shared);
                    if !move_it {
                        continue;
                    }
                    &shared
                }
            };
            if cur == *want {
                continue;
            }
            if let Err(e) = fair::write_cpus(&dir, &want.to_string()) {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot move a cpuset");
            }
        }
    }

    /// The CPUs a new node of `tenant`'s `group` is pinned to: its group's dedicated cores,
    /// else the host's unreserved CPUs now. `None` where there is no cpuset controller.
    pub fn node_cpus(&self, tenant: &str, group: &str) -> Option<String> {
        self.host.as_ref()?;
        let d = self.dedicated.read().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = d.get(&owner(tenant, group)) {
            return Some(l.to_string());
        }
        self.shared(&read_registry(&self.registry))
            .map(|s| s.to_string())
    }

    /// At stop: gives back the cores of groups with no node left (`has_nodes(tenant, group)`),
    /// lets shared cpusets have them again, and leaves `bulkhead/_daemon`.
    pub fn release(&self, has_nodes: impl Fn(&str, &str) -> bool) {
        if self.host.is_some() {
            if let Ok(_lock) = RegistryLock::take(&self.registry) {
                let d = self.dedicated.read().unwrap_or_else(|e| e.into_inner());
                for (o, list) in d.iter() {
                    let (t, g) = o.split_once('/').unwrap_or((o, ""));
                    if has_nodes(t, g) {
                        continue;
                    }
                    for cpu in &list.0 {
                        let f = self.registry.join(cpu.to_string());
                        if std::fs::read_to_string(&f).is_ok_and(|w| w.trim() == o) {
                            let _ = std::fs::remove_file(f);
                        }
                    }
                }
                self.rebalance(&read_registry(&self.registry), &CpuList::default(), &[]);
                // Gone once no core is reserved (fails while any claim is left).
                let _ = std::fs::remove_dir(&self.registry);
            }
        }
        if let Some(o) = self.origin.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.cgroups.leave_daemon_group(&o);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The registry and the rebalance against a scratch v1 tree and registry; the kernel's
    //! side (affinity following the cpuset) is `e2e_noisy.rs`'s.
    use super::*;
    use bulkhead_sandbox::cgroup::Version;
    use std::fs;

    fn config(groups: &[(&str, &str, Option<u32>)]) -> DaemonConfig {
        let mut tenants: BTreeMap<&str, String> = BTreeMap::new();
        for (t, g, n) in groups {
            let e = tenants.entry(t).or_default();
            e.push_str(&format!("        - name: {g}\n"));
            if let Some(n) = n {
                e.push_str(&format!("          dedicated_cores: {n}\n"));
            }
        }
        let list: String = tenants
            .iter()
            .map(|(t, gs)| format!("    - name: {t}\n      host_groups:\n{gs}"))
            .collect();
        let yaml = format!("config:\n  tenants:\n{list}  api:\n    bind_address: /tmp/x.sock\n");
        DaemonConfig::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    fn tree(d: &Path) -> Cgroups {
        for c in ["cpu", "memory", "pids", "freezer", "cpuset"] {
            fs::create_dir_all(d.join(c)).unwrap();
            fs::write(d.join(c).join("tasks"), "").unwrap();
        }
        fs::write(d.join("cpuset/cpuset.cpus"), "0-3").unwrap();
        fs::write(d.join("cpuset/cpuset.mems"), "0").unwrap();
        Cgroups::at(d.to_path_buf(), Version::V1).with(["cpuset"])
    }

    #[test]
    fn claims_pin_and_release() {
        let d = tempfile::tempdir().unwrap();
        let cg = tree(d.path());
        let reg = d.path().join("registry");
        // Another daemon's shared node, created before any reservation: all four CPUs.
        cg.prepare_tenant("other").unwrap();
        let other = cg.node("other", "c1");
        other.create_dirs().unwrap();
        assert_eq!(other.cpus().as_deref(), Some("0-3"));
        let cfg = config(&[("t", "a", Some(2)), ("t", "b", None), ("u", "c", Some(1))]);
        let cores = Cores::at(&cfg, &cg, reg.clone()).unwrap();
        cores.claim(&cfg, &[]).unwrap();
        assert_eq!(cores.node_cpus("t", "a").as_deref(), Some("2-3"));
        assert_eq!(cores.node_cpus("u", "c").as_deref(), Some("1"));
        assert_eq!(cores.node_cpus("t", "b").as_deref(), Some("0"));
        assert_eq!(fs::read_to_string(reg.join("3")).unwrap(), "t/a\n");
        // The other daemon's node left the reserved cores.
        assert_eq!(other.cpus().as_deref(), Some("0"));
        // A second daemon asking for one more core is refused, naming who holds what.
        let cfg2 = config(&[("v", "x", Some(1))]);
        let e = Cores::at(&cfg2, &cg, reg.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("offers 4 CPUs (0-3)") && e.contains("t/a holds 2-3"),
            "{e}"
        );
        // Release: t/a still has a node, u/c none; the shared node gets core 1 back.
        cores.release(|t, g| (t, g) == ("t", "a"));
        assert!(!reg.join("1").exists());
        assert!(reg.join("2").exists());
        assert_eq!(other.cpus().as_deref(), Some("0-1"));
        // The same config again keeps t/a's cores.
        let again = Cores::at(&cfg, &cg, reg.clone()).unwrap();
        again.claim(&cfg, &[]).unwrap();
        assert_eq!(again.node_cpus("t", "a").as_deref(), Some("2-3"));
        // A config without t/a's dedicated cores frees them.
        let fewer = config(&[("t", "a", None), ("u", "c", Some(1))]);
        let c3 = Cores::at(&fewer, &cg, reg.clone()).unwrap();
        c3.claim(&fewer, &[]).unwrap();
        assert!(!reg.join("2").exists() && !reg.join("3").exists());
        // u/c took core 1 again above; t/a shares what is left.
        assert_eq!(c3.node_cpus("t", "a").as_deref(), Some("0,2-3"));
    }

    #[test]
    fn no_cpuset_no_pinning_unless_asked() {
        let d = tempfile::tempdir().unwrap();
        let cg = Cgroups::at(d.path().to_path_buf(), Version::V1);
        let reg = d.path().join("registry");
        let c = Cores::at(&config(&[("t", "a", None)]), &cg, reg.clone()).unwrap();
        assert_eq!(c.node_cpus("t", "a"), None);
        let e = Cores::at(&config(&[("t", "a", Some(1))]), &cg, reg)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("needs the cpuset cgroup controller"),
            "{e}"
        );
    }

    fn own(t: &str, g: &str, id: &str) -> OwnNode {
        OwnNode {
            tenant: t.into(),
            group: g.into(),
            cgroup: id.into(),
        }
    }

    #[test]
    fn a_group_given_fewer_cores_has_its_nodes_pinned_to_what_it_keeps() {
        let d = tempfile::tempdir().unwrap();
        let cg = tree(d.path());
        let reg = d.path().join("registry");
        cg.prepare_tenant("t").unwrap();
        let n1 = cg.node("t", "n1");
        n1.create_dirs().unwrap();
        let nodes = [own("t", "a", "n1")];
        let cfg = config(&[("t", "a", Some(2)), ("u", "c", None)]);
        let c1 = Cores::at(&cfg, &cg, reg.clone()).unwrap();
        c1.claim(&cfg, &nodes).unwrap();
        assert_eq!(n1.cpus().as_deref(), Some("2-3"));
        // Restarted with t/a down to one core and u/c asking for one, the node still running:
        // it keeps only t/a's core, and u/c's core is nobody else's.
        let cfg = config(&[("t", "a", Some(1)), ("u", "c", Some(1))]);
        let c2 = Cores::at(&cfg, &cg, reg.clone()).unwrap();
        c2.claim(&cfg, &nodes).unwrap();
        let (a, c) = (
            c2.node_cpus("t", "a").unwrap(),
            c2.node_cpus("u", "c").unwrap(),
        );
        assert_ne!(a, c);
        assert_eq!(n1.cpus(), Some(a.clone()), "t/a's node on t/a's core only");
        // Without dedicated cores the node goes to the shared CPUs.
        let cfg = config(&[("t", "a", None), ("u", "c", Some(1))]);
        let c3 = Cores::at(&cfg, &cg, reg.clone()).unwrap();
        c3.claim(&cfg, &nodes).unwrap();
        assert_eq!(n1.cpus(), c3.node_cpus("t", "a"));
        assert_eq!(n1.cpus().as_deref(), Some("0-2"), "u/c kept core {c}");
    }

    #[test]
    fn a_failed_claim_leaves_no_claim() {
        let d = tempfile::tempdir().unwrap();
        let cg = tree(d.path());
        let reg = d.path().join("registry");
        let cfg = config(&[("t", "a", Some(1)), ("u", "c", Some(1))]);
        let cores = Cores::at(&cfg, &cg, reg.clone()).unwrap();
        // t/a's core 3 is written, u/c's core 2 cannot be (a directory is in the way).
        fs::create_dir_all(reg.join("2")).unwrap();
        assert!(cores.claim(&cfg, &[]).is_err());
        assert!(
            !reg.join("3").exists(),
            "t/a's claim stays after a failed start"
        );
        fs::remove_dir(reg.join("2")).unwrap();
        cores.claim(&cfg, &[]).unwrap();
        assert_eq!(fs::read_to_string(reg.join("2")).unwrap(), "u/c\n");
    }

    #[test]
    fn the_lock_is_on_the_registry_that_exists_now() {
        let d = tempfile::tempdir().unwrap();
        let reg = d.path().join("registry");
        let first = RegistryLock::take(&reg).unwrap();
        let r2 = reg.clone();
        let waiter = std::thread::spawn(move || {
            let _l = RegistryLock::take(&r2).unwrap();
            // The registry it holds is the one at the path: writes land there.
            fs::write(r2.join("1"), "v/x\n")
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The holder removes the (empty) registry before it unlocks, as a release does.
        fs::remove_dir(&reg).unwrap();
        drop(first);
        waiter.join().unwrap().unwrap();
        assert_eq!(fs::read_to_string(reg.join("1")).unwrap(), "v/x\n");
    }
}
