//! Roles: what a principal may do, as sets of resources × verbs (DESIGN.md §6).
//!
//! Five roles are built in (`global-admin`, `tenant-admin`, `developer`, `viewer`, and #16's
//! `shim`, the containerd shim's: nodes, execs, copies and events, no tokens, secrets, audit
//! or usage); a config
//! adds its own under `config.roles` (`{name, rules: [{resources, actions}]}`). A binding gives
//! a role in one tenant (`ROLE@TENANT`) or in every tenant (`ROLE`); `global-admin` is always
//! global and is the only role that may act on the daemon itself (tenants, identity keys,
//! tokens of any tenant). Pure data and decisions: the daemon maps each API action to a
//! (resource, verb) and asks [`Role::allows`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{key_err, ConfigError};

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Nodes,
    Tokens,
    /// The tenant's secrets (#13): `list` shows names and metadata, `create` writes content.
    Secrets,
    /// The tenant's audit trail (#14): `list` reads it (`GET /audit`).
    Audit,
    /// The tenant's event stream (#14): `list` reads it (`GET /events`).
    Events,
    /// The tenant's resource usage (#14): `list` reads it (`GET /usage`).
    Usage,
}

/// What a rule allows on its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    List,
    Get,
    Create,
    Delete,
    Exec,
    Copy,
    Logs,
    Pause,
    Resume,
    Forward,
    /// Change a node's labels (tags).
    Update,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Nodes,
        Resource::Tokens,
        Resource::Secrets,
        Resource::Audit,
        Resource::Events,
        Resource::Usage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Nodes => "nodes",
            Resource::Tokens => "tokens",
            Resource::Secrets => "secrets",
            Resource::Audit => "audit",
            Resource::Events => "events",
            Resource::Usage => "usage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The verbs that mean something on this resource.
    pub fn verbs(self) -> &'static [Verb] {
        use Verb::*;
        match self {
            Resource::Nodes => &[
                List, Get, Create, Delete, Exec, Copy, Logs, Pause, Resume, Forward, Update,
            ],
            Resource::Tokens => &[List, Create, Delete],
            Resource::Secrets => &[List, Create, Delete],
            Resource::Audit | Resource::Events | Resource::Usage => &[List],
        }
    }
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Delete => "delete",
            Verb::Exec => "exec",
            Verb::Copy => "copy",
            Verb::Logs => "logs",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Forward => "forward",
            Verb::Update => "update",
        }
    }
}

pub const GLOBAL_ADMIN: &str = "global-admin";
pub const TENANT_ADMIN: &str = "tenant-admin";
pub const DEVELOPER: &str = "developer";
pub const VIEWER: &str = "viewer";
/// #16, B1: the containerd shim's role (the `api.shim` socket's principal).
pub const SHIM: &str = "shim";
pub const BUILT_IN: [&str; 5] = [GLOBAL_ADMIN, TENANT_ADMIN, DEVELOPER, VIEWER, SHIM];

/// A role: a name and the (resource, verb) pairs it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    rules: BTreeSet<(Resource, Verb)>,
    /// `global-admin`: everything, in every tenant, and the daemon itself.
    global_admin: bool,
}

pub type RoleRef = Arc<Role>;

impl Role {
    pub fn allows(&self, resource: Resource, verb: Verb) -> bool {
        self.global_admin || self.rules.contains(&(resource, verb))
    }

    pub fn is_global_admin(&self) -> bool {
        self.global_admin
    }

    /// Whether everything this role allows, `other` allows too (the no-escalation rule of API
    /// tokens: a caller may grant only a role it holds all of). `global-admin` is a subset of
    /// `global-admin` only; every role is a subset of `global-admin`.
    pub fn is_subset_of(&self, other: &Role) -> bool {
        if other.global_admin {
            return true;
        }
        !self.global_admin && self.rules.is_subset(&other.rules)
    }

    /// `resource:verb` pairs, for docs and `bulkhead token list`.
    pub fn rules(&self) -> impl Iterator<Item = (Resource, Verb)> + '_ {
        self.rules.iter().copied()
    }

    fn all_of(resources: &[Resource]) -> BTreeSet<(Resource, Verb)> {
        resources
            .iter()
            .flat_map(|r| r.verbs().iter().map(move |v| (*r, *v)))
            .collect()
    }

    fn built_in(name: &str) -> Role {
        use Verb::*;
        let nodes = |vs: &[Verb]| vs.iter().map(|v| (Resource::Nodes, *v)).collect();
        let (rules, global_admin) = match name {
            GLOBAL_ADMIN => (Self::all_of(&Resource::ALL), true),
            TENANT_ADMIN => (Self::all_of(&Resource::ALL), false),
            DEVELOPER => {
                let mut r: BTreeSet<_> = nodes(&[
                    List, Get, Create, Delete, Exec, Copy, Logs, Pause, Resume, Forward, Update,
                ]);
                // secrets (#13): names and metadata only; writing them is the tenant-admin's.
                r.insert((Resource::Secrets, List));
                // #14: what their nodes did and used; the audit trail is the tenant-admin's.
                r.insert((Resource::Events, List));
                r.insert((Resource::Usage, List));
                (r, false)
            }
            VIEWER => {
                let mut r: BTreeSet<_> = nodes(&[List, Get, Logs]);
                r.insert((Resource::Events, List));
                r.insert((Resource::Usage, List));
                (r, false)
            }
            // #16, B1: what containerd-shim-bulkhead-v2 does with pods: create, run, stop and
            // delete nodes, exec and copy into them (containers), read their events and stats.
            SHIM => {
                let mut r: BTreeSet<_> =
                    nodes(&[List, Get, Create, Delete, Exec, Copy, Pause, Resume]);
                r.insert((Resource::Events, List));
                (r, false)
            }
            _ => unreachable!("not a built-in role: {name}"),
        };
        Role {
            name: name.into(),
            rules,
            global_admin,
        }
    }
}

/// Where a binding applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant(String),
    /// Every tenant of the daemon.
    AllTenants,
}

/// A role in a scope: `developer@a3cf`, or `viewer` (every tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub role: RoleRef,
    pub scope: Scope,
}

impl Binding {
    pub fn applies_to(&self, tenant: &str) -> bool {
        match &self.scope {
            Scope::AllTenants => true,
            Scope::Tenant(t) => t == tenant,
        }
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            Scope::AllTenants => f.write_str(&self.role.name),
            Scope::Tenant(t) => write!(f, "{}@{t}", self.role.name),
        }
    }
}

/// `config.roles[]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub resources: Vec<String>,
    pub actions: Vec<String>,
}

/// Every role a daemon knows: the built-in four and the config's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    by_name: HashMap<String, RoleRef>,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            by_name: BUILT_IN
                .iter()
                .map(|n| (n.to_string(), Arc::new(Role::built_in(n))))
                .collect(),
        }
    }
}

impl Roles {
    /// The built-in roles plus `config.roles`, validated: names are labels and new, resources
    /// and actions known (`*` means all of a resource's actions), no rule empty.
    pub fn from_config(raw: &[RawRole]) -> Result<Self, ConfigError> {
        let mut roles = Roles::default();
        for (i, r) in raw.iter().enumerate() {
            let p = format!("config.roles[{i}]");
            bulkhead_api::names::validate_label("role name", &r.name)
                .map_err(|m| key_err(format!("{p}.name"), m))?;
            if roles.by_name.contains_key(&r.name) {
                let why = if BUILT_IN.contains(&r.name.as_str()) {
                    "is a built-in role: choose another name"
                } else {
                    "is defined twice: role names must be unique"
                };
                return Err(key_err(format!("{p}.name"), format!("{:?} {why}", r.name)));
            }
            if r.rules.is_empty() {
                return Err(key_err(
                    format!("{p}.rules"),
                    "a role needs at least one rule, e.g. {resources: [nodes], actions: [list, get]}",
                ));
            }
            let mut rules = BTreeSet::new();
            for (j, rule) in r.rules.iter().enumerate() {
                let rp = format!("{p}.rules[{j}]");
                if rule.resources.is_empty() || rule.actions.is_empty() {
                    return Err(key_err(
                        &rp,
                        "a rule names at least one resource and one action",
                    ));
                }
                for res in &rule.resources {
                    let resource = Resource::parse(res).ok_or_else(|| {
                        key_err(
                            format!("{rp}.resources"),
                            format!(
                                "unknown resource {res:?}: known are {}",
                                Resource::ALL.map(|r| r.as_str()).join(", ")
                            ),
                        )
                    })?;
                    for a in &rule.actions {
                        if a == "*" {
                            rules.extend(resource.verbs().iter().map(|v| (resource, *v)));
                            continue;
                        }
                        let verb = resource
                            .verbs()
                            .iter()
                            .find(|v| v.as_str() == a)
                            .ok_or_else(|| {
                                key_err(
                                    format!("{rp}.actions"),
                                    format!(
                                        "{a:?} is not an action on {res}: known are {} (or *)",
                                        resource
                                            .verbs()
                                            .iter()
                                            .map(|v| v.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                                )
                            })?;
                        rules.insert((resource, *verb));
                    }
                }
            }
            roles.by_name.insert(
                r.name.clone(),
                Arc::new(Role {
                    name: r.name.clone(),
                    rules,
                    global_admin: false,
                }),
            );
        }
        Ok(roles)
    }

    pub fn get(&self, name: &str) -> Option<RoleRef> {
        self.by_name.get(name).cloned()
    }

    /// Every role, by name.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// A binding of role `role` in `tenant` (or in every tenant with `None`).
    pub fn binding(&self, role: &str, tenant: Option<&str>) -> Result<Binding, String> {
        let r = self.get(role).ok_or_else(|| {
            format!(
                "unknown role {role:?}: known are {}",
                self.names().join(", ")
            )
        })?;
        let scope = match tenant {
            None => Scope::AllTenants,
            Some(_) if r.global_admin => {
                return Err(format!(
                    "{GLOBAL_ADMIN} applies to every tenant: bind it without @TENANT"
                ))
            }
            Some(t) => {
                bulkhead_api::names::validate_label("tenant", t)?;
                Scope::Tenant(t.into())
            }
        };
        Ok(Binding { role: r, scope })
    }

    /// Parses `ROLE` or `ROLE@TENANT` (an OIDC roles claim's entries).
    pub fn parse_binding(&self, s: &str) -> Result<Binding, String> {
        match s.split_once('@') {
            None => self.binding(s, None),
            Some((role, tenant)) => self.binding(role, Some(tenant)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roles_allow_what_the_docs_say() {
        let r = Roles::default();
        // #16, B1: the shim's role: nodes and events, never tokens, secrets, audit, usage.
        let s = r.get(SHIM).unwrap();
        for v in [
            Verb::Create,
            Verb::Delete,
            Verb::Exec,
            Verb::Copy,
            Verb::Pause,
        ] {
            assert!(s.allows(Resource::Nodes, v), "{v:?}");
        }
        assert!(s.allows(Resource::Events, Verb::List));
        assert!(!s.allows(Resource::Nodes, Verb::Forward));
        for res in [
            Resource::Tokens,
            Resource::Secrets,
            Resource::Audit,
            Resource::Usage,
        ] {
            assert!(res.verbs().iter().all(|v| !s.allows(res, *v)), "{res:?}");
        }
        assert!(!s.is_global_admin());
        let v = r.get(VIEWER).unwrap();
        assert!(v.allows(Resource::Nodes, Verb::List));
        assert!(v.allows(Resource::Nodes, Verb::Logs));
        assert!(!v.allows(Resource::Nodes, Verb::Exec));
        assert!(!v.allows(Resource::Tokens, Verb::List));
        let d = r.get(DEVELOPER).unwrap();
        assert!(d.allows(Resource::Nodes, Verb::Exec));
        assert!(d.allows(Resource::Nodes, Verb::Forward));
        assert!(!d.allows(Resource::Tokens, Verb::Create));
        let ta = r.get(TENANT_ADMIN).unwrap();
        assert!(ta.allows(Resource::Tokens, Verb::Create));
        assert!(!ta.is_global_admin());
        assert!(r.get(GLOBAL_ADMIN).unwrap().is_global_admin());
    }

    #[test]
    fn custom_roles_are_validated_and_name_the_key() {
        let ok = Roles::from_config(&[RawRole {
            name: "ci-runner".into(),
            rules: vec![RawRule {
                resources: vec!["nodes".into()],
                actions: vec!["list".into(), "exec".into()],
            }],
        }])
        .unwrap();
        let ci = ok.get("ci-runner").unwrap();
        assert!(ci.allows(Resource::Nodes, Verb::Exec));
        assert!(!ci.allows(Resource::Nodes, Verb::Delete));
        let bad = |name: &str, res: &str, act: &str| {
            Roles::from_config(&[RawRole {
                name: name.into(),
                rules: vec![RawRule {
                    resources: vec![res.into()],
                    actions: vec![act.into()],
                }],
            }])
            .unwrap_err()
            .to_string()
        };
        assert!(bad("viewer", "nodes", "get").contains("built-in"));
        assert!(bad("x", "volumes", "get").contains("config.roles[0].rules[0].resources"));
        assert!(bad("x", "nodes", "fly").contains("not an action on nodes"));
        assert!(bad("X Y", "nodes", "get").contains("config.roles[0].name"));
        let all = Roles::from_config(&[RawRole {
            name: "all".into(),
            rules: vec![RawRule {
                resources: vec!["nodes".into()],
                actions: vec!["*".into()],
            }],
        }])
        .unwrap();
        assert!(all
            .get("all")
            .unwrap()
            .allows(Resource::Nodes, Verb::Update));
    }

    #[test]
    fn subsets_follow_the_rules() {
        let r = Roles::from_config(&[RawRole {
            name: "minter".into(),
            rules: vec![RawRule {
                resources: vec!["tokens".into(), "nodes".into()],
                actions: vec!["create".into(), "list".into()],
            }],
        }])
        .unwrap();
        let g = |n: &str| r.get(n).unwrap();
        assert!(g(VIEWER).is_subset_of(&g(DEVELOPER)));
        assert!(!g(DEVELOPER).is_subset_of(&g(VIEWER)));
        assert!(g(DEVELOPER).is_subset_of(&g(TENANT_ADMIN)));
        assert!(!g(TENANT_ADMIN).is_subset_of(&g(DEVELOPER)));
        assert!(g(TENANT_ADMIN).is_subset_of(&g(GLOBAL_ADMIN)));
        assert!(!g(GLOBAL_ADMIN).is_subset_of(&g(TENANT_ADMIN)));
        assert!(g(GLOBAL_ADMIN).is_subset_of(&g(GLOBAL_ADMIN)));
        // A custom role that may create tokens cannot mint a tenant-admin or developer token,
        // only one of a role it holds all of (itself, or less).
        assert!(!g(TENANT_ADMIN).is_subset_of(&g("minter")));
        assert!(!g(DEVELOPER).is_subset_of(&g("minter")));
        assert!(!g(VIEWER).is_subset_of(&g("minter")), "viewer reads logs");
        assert!(g("minter").is_subset_of(&g("minter")));
    }

    #[test]
    fn bindings_parse_and_scope() {
        let r = Roles::default();
        let b = r.parse_binding("developer@a3cf").unwrap();
        assert!(b.applies_to("a3cf") && !b.applies_to("e7d1"));
        assert_eq!(b.to_string(), "developer@a3cf");
        assert!(r.parse_binding("viewer").unwrap().applies_to("any"));
        assert!(r.parse_binding("global-admin@a3cf").is_err());
        assert!(r
            .parse_binding("root@a3cf")
            .unwrap_err()
            .contains("unknown role"));
        assert!(r.parse_binding("viewer@A B").is_err());
    }
}
