//! What a request reaches: the daemon (host services and every tenant it serves) and, once
//! the authorization layer has resolved a request's object, that object's tenant.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::auth::Roles;
use crate::services::HostServices;
use crate::tenant::Tenant;

/// One tenant as a handler reaches it: the host's services and the tenant.
pub struct App {
    pub host: Arc<HostServices>,
    pub tenant: Arc<Tenant>,
}

/// The daemon: every tenant it serves over one set of host services. A one-tenant daemon is
/// the smallest case.
pub struct Daemon {
    pub host: Arc<HostServices>,
    /// In config order (lists and pages follow it).
    pub tenants: Vec<Arc<App>>,
    /// `config.tenants` was used: client-chosen hostnames must begin with their group's name.
    pub shared: bool,
    pub roles: Arc<Roles>,
    /// Requests refused with 401 (no tenant to count them against).
    pub unauthenticated: AtomicU64,
    /// The daemon's own state (API tokens, identity keys): a one-tenant daemon's tenant
    /// directory, a shared daemon's `<state>/shared`.
    pub dir: std::path::PathBuf,
    /// API tokens (`/tokens`, ADR 0022): `<dir>/auth.db` and the roles they may name.
    pub tokens: Arc<crate::auth::token_admin::TokenService>,
    /// audit (#14, A): a shared daemon's own trail (`<dir>/audit`: failed authentication, a
    /// global-admin's requests over several tenants); `None` for a one-tenant daemon, whose
    /// trail is its tenant's.
    pub audit: Option<crate::audit::Audit>,
}

impl Daemon {
    /// The tenants' names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.tenants.iter().map(|a| a.tenant.name.clone()).collect()
    }

    /// A shared daemon's stores must keep node names apart across tenants: a node whose name
    /// another tenant's host group could also give (left from a one-tenant daemon's free
    /// hostnames, or a group moved between tenants) would make a name point at two tenants.
    /// Refuses such a start, naming both tenants and the node.
    pub fn check_node_names(&self) -> Result<(), String> {
        if !self.shared {
            return Ok(());
        }
        for a in &self.tenants {
            for row in a.tenant.list().rows() {
                for b in &self.tenants {
                    if Arc::ptr_eq(a, b) {
                        continue;
                    }
                    let clash = b.tenant.has_node(&row.name)
                        || b.tenant.cfg.groups.iter().any(|g| {
                            row.name
                                .strip_prefix(g.name.as_str())
                                .is_some_and(|rest| rest.starts_with('-') || rest.is_empty())
                        });
                    if clash {
                        return Err(format!(
                            "node {:?} of tenant {:?} has a name tenant {:?} could also give (a shared daemon's node names begin with their own tenant's group name): delete it with that tenant's own daemon first, or rename the groups",
                            row.name, a.tenant.name, b.tenant.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
