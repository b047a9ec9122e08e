//! `config.api.shim` (#16, B1): the listener `containerd-shim-bulkhead-v2` talks to, and the
//! rule that maps a pod's namespace (Kubernetes', else containerd's) to a tenant and, per
//! driver, a host group.
//!
//! ```yaml
//! api:
//!   shim:
//!     socket: /run/bulkhead/shim.sock        # default
//!     namespaces:
//!       default: a3cf                        # NS: TENANT
//!       team-b: { tenant: b, jail: jails, qemu: vms }
//!       "*": a3cf                            # every other namespace
//! ```
//! - `socket`: an absolute path, not another listener's socket;
//! - `namespaces`: each key a namespace name or `*`; each value a tenant, or `{tenant, jail,
//!   qemu}` naming the tenant's host group for each driver (a group of that driver). Without
//!   a group for a driver, placement takes the tenant's first host group of that driver.
//!   A one-tenant daemon without `namespaces` maps every namespace to its tenant; a shared
//!   daemon must name its mapping.
//!
//! Invariants: a config without `api.shim` has no shim listener (every existing config keeps
//! loading and behaving as before); every tenant and host group the mapping names exists,
//! and a group named for a driver is of that driver; errors name the key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::error::{key_err, ConfigError};
pub use super::shim_raw::{RawShim, RawShimFull, RawShimTarget};
use super::TenantConfig;

/// Where the shim socket is when `config.api.shim.socket` is not given.
pub const DEFAULT_SOCKET: &str = "/run/bulkhead/shim.sock";
/// The namespace key that maps every namespace not named.
pub const ANY_NAMESPACE: &str = "*";
/// The drivers a pod may ask for (`driver=` of `GET /shim/placement`).
pub const DRIVERS: [&str; 2] = ["jail", "qemu"];

/// Where one namespace's pods go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimTarget {
    pub tenant: String,
    /// The host group for jail pods, if the mapping names one.
    pub jail: Option<String>,
    /// The host group for qemu pods, if the mapping names one.
    pub qemu: Option<String>,
}

impl ShimTarget {
    /// The host group the mapping names for `driver`, if any.
    pub fn group(&self, driver: &str) -> Option<&str> {
        match driver {
            "jail" => self.jail.as_deref(),
            "qemu" => self.qemu.as_deref(),
            _ => None,
        }
    }
}

/// `config.api.shim`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimApi {
    pub socket: PathBuf,
    /// By namespace (`*`: every namespace not named).
    pub namespaces: BTreeMap<String, ShimTarget>,
}

impl ShimApi {
    /// Where `namespace`'s pods go: its own mapping, else `*`'s.
    pub fn target(&self, namespace: &str) -> Option<&ShimTarget> {
        self.namespaces
            .get(namespace)
            .or_else(|| self.namespaces.get(ANY_NAMESPACE))
    }

    /// Every tenant the mapping can name (the shim principal's bindings).
    pub fn tenants(&self) -> BTreeSet<&str> {
        self.namespaces
            .values()
            .map(|t| t.tenant.as_str())
            .collect()
    }

    /// Validates `config.api.shim` (`path` names it in errors) against the daemon's tenants.
    pub fn from_raw(
        path: &str,
        raw: &RawShim,
        tenants: &[TenantConfig],
    ) -> Result<ShimApi, ConfigError> {
        let socket = match &raw.socket {
            None => PathBuf::from(DEFAULT_SOCKET),
            Some(p) if p.is_absolute() && p.file_name().is_some() => p.clone(),
            Some(p) => {
                return Err(key_err(
                    format!("{path}.socket"),
                    format!(
                        "{} is not an absolute path to a socket: write e.g. {DEFAULT_SOCKET}",
                        p.display()
                    ),
                ))
            }
        };
        let namespaces = match raw.namespaces.as_ref().filter(|m| !m.is_empty()) {
            None => {
                match tenants {
                    [one] => BTreeMap::from([(
                        ANY_NAMESPACE.to_string(),
                        ShimTarget {
                            tenant: one.tenant.clone(),
                            jail: None,
                            qemu: None,
                        },
                    )]),
                    _ => {
                        return Err(key_err(
                            format!("{path}.namespaces"),
                            "a daemon of several tenants must say which namespace goes to which tenant: write e.g. namespaces: {team-a: a, \"*\": b}",
                        ))
                    }
                }
            }
            Some(m) => {
                let mut out = BTreeMap::new();
                for (ns, t) in m {
                    let key = format!("{path}.namespaces.{ns}");
                    validate_namespace(ns).map_err(|m| key_err(&key, m))?;
                    out.insert(ns.clone(), target(&key, t, tenants)?);
                }
                out
            }
        };
        Ok(ShimApi { socket, namespaces })
    }
}

/// A namespace key: `*`, or a containerd/Kubernetes namespace name.
fn validate_namespace(ns: &str) -> Result<(), String> {
    let ok = ns == ANY_NAMESPACE
        || (!ns.is_empty()
            && ns.len() <= 76
            && ns.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{ns:?} is not a namespace name: use letters, digits, . _ - (starting with a letter or digit), or \"*\" for every other namespace"
        ))
    }
}

fn target(
    key: &str,
    raw: &RawShimTarget,
    tenants: &[TenantConfig],
) -> Result<ShimTarget, ConfigError> {
    let (tenant, jail, qemu) = match raw {
        RawShimTarget::Tenant(t) => (t, None, None),
        RawShimTarget::Full(f) => (&f.tenant, f.jail.as_ref(), f.qemu.as_ref()),
    };
    let Some(tc) = tenants.iter().find(|t| &t.tenant == tenant) else {
        let names: Vec<&str> = tenants.iter().map(|t| t.tenant.as_str()).collect();
        return Err(key_err(
            key,
            format!(
                "tenant {tenant:?} is not a tenant of this daemon: name one of {}",
                names.join(", ")
            ),
        ));
    };
    for (driver, group) in [("jail", jail), ("qemu", qemu)] {
        let Some(g) = group else { continue };
        match tc.groups.iter().find(|h| &h.name == g) {
            None => {
                return Err(key_err(
                    format!("{key}.{driver}"),
                    format!("tenant {tenant:?} has no host group {g:?}"),
                ))
            }
            Some(h) if h.hypervisor != driver => {
                return Err(key_err(
                    format!("{key}.{driver}"),
                    format!(
                        "host group {g:?} of tenant {tenant:?} runs the {} driver, not {driver}: name a {driver} group",
                        h.hypervisor
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(ShimTarget {
        tenant: tenant.clone(),
        jail: jail.cloned(),
        qemu: qemu.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DaemonConfig;

    const ONE: &str = r#"
config:
  host_groups:
    - { name: a3cf, network: { mode: none } }
    - { name: vms, hypervisor: qemu, network: { mode: none } }
  hypervisor: jail
  api:
    bind_address: /run/bulkhead/a3cf.sock
"#;

    const SHARED: &str = r#"
config:
  tenants:
    - name: a
      host_groups:
        - { name: a, network: { mode: isolated, range: 10.10.0.0/24 } }
        - { name: a-vm, hypervisor: qemu, network: { mode: isolated, range: 10.11.0.0/24 } }
    - name: b
      host_groups:
        - { name: b, network: { mode: isolated, range: 10.20.0.0/24 } }
  api:
    bind_address: /run/bulkhead/admin.sock
    tenant_sockets: /run/bulkhead/tenants
"#;

    fn with(base: &str, shim: &str) -> Result<DaemonConfig, String> {
        let text = base.replacen("  api:\n", &format!("  api:\n    shim: {shim}\n"), 1);
        DaemonConfig::parse(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_no_listener_and_defaults_fill_in() {
        assert_eq!(DaemonConfig::parse(ONE).unwrap().api.shim, None);
        assert_eq!(DaemonConfig::parse(SHARED).unwrap().api.shim, None);
        // A one-tenant daemon without namespaces maps every namespace to its tenant.
        let s = with(ONE, "{}").unwrap().api.shim.unwrap();
        assert_eq!(s.socket, PathBuf::from(DEFAULT_SOCKET));
        let t = s.target("anything").unwrap();
        assert_eq!((t.tenant.as_str(), t.jail.as_deref()), ("a3cf", None));
        assert_eq!(s.tenants(), BTreeSet::from(["a3cf"]));
        let s = with(ONE, "{socket: /run/x/shim.sock, namespaces: {}}")
            .unwrap()
            .api
            .shim
            .unwrap();
        assert_eq!(s.socket, PathBuf::from("/run/x/shim.sock"));
        assert_eq!(s.target("k8s").unwrap().tenant, "a3cf");
    }

    #[test]
    fn namespaces_map_to_tenants_and_groups() {
        let s = with(
            SHARED,
            r#"{namespaces: {team-a: a, prod: {tenant: a, jail: a, qemu: a-vm}, "*": b}}"#,
        )
        .unwrap()
        .api
        .shim
        .unwrap();
        assert_eq!(s.target("team-a").unwrap().tenant, "a");
        assert_eq!(s.target("team-a").unwrap().group("qemu"), None);
        let p = s.target("prod").unwrap();
        assert_eq!(
            (p.group("jail"), p.group("qemu")),
            (Some("a"), Some("a-vm"))
        );
        assert_eq!(s.target("other").unwrap().tenant, "b");
        assert_eq!(s.tenants(), BTreeSet::from(["a", "b"]));
        // Without "*", an unnamed namespace maps to nothing.
        let s = with(SHARED, "{namespaces: {team-a: a}}")
            .unwrap()
            .api
            .shim
            .unwrap();
        assert!(s.target("team-b").is_none());
        assert_eq!(s.tenants(), BTreeSet::from(["a"]));
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = with(SHARED, "{}").unwrap_err();
        assert!(
            e.contains("config.api.shim.namespaces") && e.contains("several tenants"),
            "{e}"
        );
        let e = with(SHARED, "{namespaces: {team-a: nope}}").unwrap_err();
        assert!(
            e.contains("config.api.shim.namespaces.team-a")
                && e.contains("\"nope\" is not a tenant"),
            "{e}"
        );
        let e = with(SHARED, "{namespaces: {x: {tenant: a, jail: zz}}}").unwrap_err();
        assert!(
            e.contains("config.api.shim.namespaces.x.jail") && e.contains("no host group \"zz\""),
            "{e}"
        );
        let e = with(SHARED, "{namespaces: {x: {tenant: a, qemu: a}}}").unwrap_err();
        assert!(
            e.contains("config.api.shim.namespaces.x.qemu") && e.contains("runs the jail driver"),
            "{e}"
        );
        let e = with(SHARED, "{namespaces: {x: {tenant: a, runc: a}}}").unwrap_err();
        assert!(e.contains("config.api.shim"), "{e}");
        let e = with(SHARED, r#"{namespaces: {"a/b": a}}"#).unwrap_err();
        assert!(
            e.contains("config.api.shim.namespaces.a/b") && e.contains("not a namespace name"),
            "{e}"
        );
        let e = with(ONE, "{socket: shim.sock}").unwrap_err();
        assert!(
            e.contains("config.api.shim.socket") && e.contains("absolute"),
            "{e}"
        );
        let e = with(ONE, "{socket: /run/bulkhead/a3cf.sock}").unwrap_err();
        assert!(
            e.contains("config.api.shim.socket") && e.contains("of its own"),
            "{e}"
        );
        let e = with(
            SHARED,
            "{socket: /run/bulkhead/tenants/shim.sock, namespaces: {x: a}}",
        )
        .unwrap_err();
        assert!(e.contains("config.api.shim.socket"), "{e}");
        let e = with(ONE, "{sockets: /x}").unwrap_err();
        assert!(e.contains("sockets"), "{e}");
    }
}
