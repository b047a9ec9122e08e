//! The registry type: the drivers a build has, each under its config name. The list itself is
//! made in one place only, by the binaries (`crates/bulkhead/src/drivers.rs`), so the daemon,
//! the supervisor and `validate` agree on it, and nothing else names a driver.

use bulkhead_core::{ConfigError, HostFacts, TenantConfig};
use std::sync::Arc;

use crate::{Driver, DriverError, HostEnv, Launcher};

/// One driver: its name in `hypervisor:`, its config checks, its daemon side (opened once per
/// daemon) and its supervisor side.
#[derive(Clone, Copy)]
pub struct DriverEntry {
    pub name: &'static str,
    /// What the driver requires of a config on this host, beyond the checks every config
    /// gets (`TenantConfig::check_host`). Errors name the key.
    pub check: fn(&TenantConfig, &HostFacts) -> Result<(), ConfigError>,
    /// Settings that work but not as their numbers suggest, one sentence each.
    pub warnings: fn(&TenantConfig) -> Vec<String>,
    /// Makes the driver ready on this host for one tenant (may take a while: a guest kernel).
    pub open: fn(&HostEnv<'_>) -> Result<Arc<dyn Driver>, DriverError>,
    pub launcher: &'static dyn Launcher,
}

impl std::fmt::Debug for DriverEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The supervisor sides of this build's drivers, by name: all `bulkhead-supervisor` needs, so
/// that the per-node process links none of the daemon sides (image stores, guest kernels,
/// config checks) and an idle node costs the host less (docs/benchmarks.md).
pub struct Launchers(pub &'static [(&'static str, &'static dyn Launcher)]);

impl Launchers {
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|(n, _)| *n).collect()
    }

    pub fn get(&self, name: &str) -> Result<&'static dyn Launcher, DriverError> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| *l)
            .ok_or_else(|| DriverError::Unknown {
                name: name.into(),
                known: self.names(),
            })
    }
}

/// The drivers of this build.
#[derive(Debug)]
pub struct Registry {
    entries: Vec<DriverEntry>,
}

impl Registry {
    /// # Panics
    /// When two entries share a name: a build error, not a runtime one.
    pub fn new(entries: Vec<DriverEntry>) -> Self {
        for (i, e) in entries.iter().enumerate() {
            assert!(
                !entries[..i].iter().any(|x| x.name == e.name),
                "driver {:?} registered twice",
                e.name
            );
        }
        Registry { entries }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    pub fn get(&self, name: &str) -> Result<&DriverEntry, DriverError> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| DriverError::Unknown {
                name: name.into(),
                known: self.names(),
            })
    }

    /// Everything `validate` and `up` check of a config on this host: its `hypervisor` (and
    /// each host group's own) names a driver of this build, its groups fit the host, and each
    /// driver's own checks pass on the groups it runs. The tenant's driver comes first.
    pub fn check(
        &self,
        cfg: &TenantConfig,
        host: &HostFacts,
    ) -> Result<Vec<&DriverEntry>, ConfigError> {
        cfg.check_host(host)?;
        // admission policy (#12): `policy.drivers` names drivers of this build
        for (i, d) in cfg.policy.drivers.iter().flatten().enumerate() {
            self.get(d).map_err(|e| ConfigError::Key {
                path: format!("config.policy.drivers[{i}]"),
                message: e.to_string(),
            })?;
        }
        let mut out = Vec::new();
        for name in cfg.drivers() {
            let (sub, idx) = cfg.for_driver(name);
            let entry = self.get(name).map_err(|e| ConfigError::Key {
                path: match idx.first() {
                    Some(i) if name != cfg.hypervisor => {
                        format!("config.host_groups[{i}].hypervisor")
                    }
                    _ => "config.hypervisor".into(),
                },
                message: e.to_string(),
            })?;
            (entry.check)(&sub, host).map_err(|e| reindex(e, &idx))?;
            out.push(entry);
        }
        Ok(out)
    }

    /// The config's warnings for its drivers (none for a driver this build lacks).
    pub fn warnings(&self, cfg: &TenantConfig) -> Vec<String> {
        cfg.drivers()
            .into_iter()
            .filter_map(|name| {
                let e = self.get(name).ok()?;
                Some((e.warnings)(&cfg.for_driver(name).0))
            })
            .flatten()
            .collect()
    }
}

/// A driver's error about `config.host_groups[j]` of its part of the config, named by the
/// group's index `idx[j]` in the whole config.
fn reindex(e: ConfigError, idx: &[usize]) -> ConfigError {
    match e {
        ConfigError::Key { path, message } => {
            let path = path
                .strip_prefix("config.host_groups[")
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(j, tail)| {
                    let i = idx.get(j.parse::<usize>().ok()?)?;
                    Some(format!("config.host_groups[{i}]{tail}"))
                })
                .unwrap_or(path);
            ConfigError::Key { path, message }
        }
        other => other,
    }
}
