//! Who is calling, and what they may do: the request pipeline's middle.
//!
//! ```text
//! listener ─▶ authenticate (authn.rs) ─▶ Principal ─▶ authorize(principal, action, tenant) ─▶ handler
//! ```
//! Every route declares its [`Action`] in the route table (`http/mod.rs`); one layer
//! (`layer.rs`) authorizes every routed request before its handler runs, and a route without
//! an action is refused (deny by default). Roles and what they allow are data ([`POLICY`]),
//! each entry with its reason.
//!
//! Today's two ways in are the first two authenticators: the peer of the tenant's UNIX socket
//! (the socket's file permissions are the proof) and the bearer token of the TCP listener;
//! both bind the caller as tenant-admin of the daemon's tenant, which is exactly what they
//! could do before principals existed. OIDC and workload tokens will be further
//! authenticators; role bindings will come from the config.

pub mod authn;
pub mod layer;

use bulkhead_core::{Code, DomainError};

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A peer of a UNIX socket, by its kernel-reported credentials.
    Socket { uid: u32, gid: u32, pid: i32 },
    /// The listener's bearer token.
    BearerToken,
}

/// Roles, least to most powerful (DESIGN.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Developer,
    TenantAdmin,
    GlobalAdmin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::TenantAdmin => "tenant-admin",
            Role::GlobalAdmin => "global-admin",
        }
    }
}

/// Where a role binding applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant(String),
    /// Every tenant (global-admin).
    AllTenants,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub role: Role,
    pub scope: Scope,
}

/// Who is calling, how they proved it, and their role bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A stable name for logs and audit (`uid:0`, `token`).
    pub id: String,
    pub via: Via,
    pub bindings: Vec<Binding>,
}

impl Principal {
    /// The principal's strongest role in `tenant`, if any.
    pub fn role_in(&self, tenant: &str) -> Option<Role> {
        self.bindings
            .iter()
            .filter(|b| match &b.scope {
                Scope::AllTenants => true,
                Scope::Tenant(t) => t == tenant,
            })
            .map(|b| b.role)
            .max()
    }
}

/// What a request does. Every route's every method names one (`http/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ReadHealth,
    ReadInfo,
    ReadMetrics,
    ListGroups,
    ListNodes,
    CreateNode,
    DeleteNode,
    ReadNodeHealth,
    ReadNodeLogs,
    ExecInNode,
    CopyToNode,
    CopyFromNode,
    PauseNode,
    ResumeNode,
    ListForwards,
    OpenForward,
    CloseForward,
    ReadBgExecs,
    ControlBgExecs,
    // shell, forward WebSockets and stats (issue #10, ws)
    ConnectToNode,
    ReadNodeStats,
    // lifecycle (describe, tags, power)
    DescribeNode,
    ReadNodeTags,
    UpdateNodeTags,
    ShutdownNode,
    RelaunchNode,
    SuspendNode,
    RestoreNode,
}

/// The least role that may do each action, and why. Deny by default: an action missing here
/// is allowed to nobody (a unit test keeps every action listed).
pub const POLICY: &[(Action, Role, &str)] = &[
    (
        Action::ReadHealth,
        Role::Viewer,
        "liveness of the daemon only",
    ),
    (
        Action::ReadInfo,
        Role::Viewer,
        "version and driver, nothing of nodes",
    ),
    (Action::ReadMetrics, Role::Viewer, "counts, never content"),
    (Action::ListGroups, Role::Viewer, "the tenant's templates"),
    (
        Action::ListNodes,
        Role::Viewer,
        "names, addresses, tags and states",
    ),
    (
        Action::ReadNodeHealth,
        Role::Viewer,
        "whether the agent answers",
    ),
    (
        Action::ListForwards,
        Role::Viewer,
        "which ports are published",
    ),
    (
        Action::ReadNodeLogs,
        Role::Developer,
        "the console may carry workload output",
    ),
    (Action::CopyFromNode, Role::Developer, "reads workload data"),
    (
        Action::CreateNode,
        Role::Developer,
        "spends the tenant's resources",
    ),
    (
        Action::DeleteNode,
        Role::Developer,
        "destroys workload state",
    ),
    (Action::ExecInNode, Role::Developer, "runs code in a node"),
    (Action::CopyToNode, Role::Developer, "writes workload data"),
    (Action::PauseNode, Role::Developer, "stops a workload"),
    (Action::ResumeNode, Role::Developer, "restarts a workload"),
    (
        Action::OpenForward,
        Role::Developer,
        "publishes a node's port on the host",
    ),
    (
        Action::CloseForward,
        Role::Developer,
        "withdraws a published port",
    ),
    (
        Action::ReadBgExecs,
        Role::Developer,
        "background execs' commands, arguments and output are workload data",
    ),
    (
        Action::ControlBgExecs,
        Role::Developer,
        "signals or forgets a workload's command",
    ),
    // lifecycle (describe, tags, power)
    (
        Action::DescribeNode,
        Role::Viewer,
        "a node's settings and network policy, nothing of its content",
    ),
    (Action::ReadNodeTags, Role::Viewer, "the node's labels"),
    (
        Action::UpdateNodeTags,
        Role::Developer,
        "changes what lists and filters find",
    ),
    (Action::ShutdownNode, Role::Developer, "stops a workload"),
    (
        Action::RelaunchNode,
        Role::Developer,
        "starts a workload, spending the tenant's resources",
    ),
    (
        Action::SuspendNode,
        Role::Developer,
        "stops a workload, writing its memory to the host's disk",
    ),
    (
        Action::RestoreNode,
        Role::Developer,
        "starts a workload from its saved memory",
    ),
    (
        Action::ConnectToNode,
        Role::Developer,
        "a terminal or a TCP connection into a node",
    ),
    (Action::ReadNodeStats, Role::Viewer, "counts, never content"),
];

impl Action {
    fn least_role(self) -> Option<Role> {
        POLICY
            .iter()
            .find(|(a, _, _)| *a == self)
            .map(|(_, r, _)| *r)
    }
}

/// Decides whether `principal` may do `action` in `tenant`. The one authorization decision;
/// every routed request passes it.
pub fn authorize(principal: &Principal, action: Action, tenant: &str) -> Result<(), DomainError> {
    let Some(role) = principal.role_in(tenant) else {
        return Err(DomainError::new(
            Code::Forbidden,
            format!(
                "{} has no role in tenant {tenant:?}: ask its tenant-admin for one",
                principal.id
            ),
        ));
    };
    match action.least_role() {
        Some(least) if role >= least => Ok(()),
        Some(least) => Err(DomainError::new(
            Code::Forbidden,
            format!(
                "{} is {} in tenant {tenant:?}, and {action:?} needs {}: ask its tenant-admin for that role",
                principal.id,
                role.as_str(),
                least.as_str()
            ),
        )),
        None => Err(DomainError::new(
            Code::Forbidden,
            format!("{action:?} is allowed to nobody"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(bindings: Vec<Binding>) -> Principal {
        Principal {
            id: "test".into(),
            via: Via::BearerToken,
            bindings,
        }
    }
    fn bind(role: Role, tenant: &str) -> Binding {
        Binding {
            role,
            scope: Scope::Tenant(tenant.into()),
        }
    }

    const ALL: [Action; 28] = [
        Action::ReadHealth,
        Action::ReadInfo,
        Action::ReadMetrics,
        Action::ListGroups,
        Action::ListNodes,
        Action::CreateNode,
        Action::DeleteNode,
        Action::ReadNodeHealth,
        Action::ReadNodeLogs,
        Action::ExecInNode,
        Action::CopyToNode,
        Action::CopyFromNode,
        Action::PauseNode,
        Action::ResumeNode,
        Action::ListForwards,
        Action::OpenForward,
        Action::CloseForward,
        Action::ReadBgExecs,
        Action::ControlBgExecs,
        Action::ConnectToNode,
        Action::ReadNodeStats,
        Action::DescribeNode,
        Action::ReadNodeTags,
        Action::UpdateNodeTags,
        Action::ShutdownNode,
        Action::RelaunchNode,
        Action::SuspendNode,
        Action::RestoreNode,
    ];

    #[test]
    fn every_action_has_exactly_one_policy_entry_with_a_reason() {
        for a in ALL {
            let n = POLICY
                .iter()
                .filter(|(x, _, why)| *x == a && !why.is_empty())
                .count();
            assert_eq!(n, 1, "{a:?}");
        }
        assert_eq!(POLICY.len(), ALL.len());
    }

    #[test]
    fn roles_are_scoped_to_their_tenant() {
        let dev = principal(vec![bind(Role::Developer, "a")]);
        assert!(authorize(&dev, Action::ExecInNode, "a").is_ok());
        let e = authorize(&dev, Action::ExecInNode, "b").unwrap_err();
        assert_eq!(e.code, Code::Forbidden);
        assert!(e.message.contains("no role in tenant \"b\""));
        let viewer = principal(vec![bind(Role::Viewer, "a")]);
        assert!(authorize(&viewer, Action::ListNodes, "a").is_ok());
        for a in [
            Action::ExecInNode,
            Action::CopyFromNode,
            Action::ReadNodeLogs,
            Action::CreateNode,
        ] {
            let e = authorize(&viewer, a, "a").unwrap_err();
            assert!(e.message.contains("needs developer"), "{}", e.message);
        }
        let global = principal(vec![Binding {
            role: Role::GlobalAdmin,
            scope: Scope::AllTenants,
        }]);
        for a in ALL {
            assert!(authorize(&global, a, "any").is_ok());
        }
        // Nobody with no binding at all gets anything.
        let nobody = principal(vec![]);
        for a in ALL {
            assert!(authorize(&nobody, a, "a").is_err());
        }
    }

    #[test]
    fn strongest_binding_wins() {
        let p = principal(vec![bind(Role::Viewer, "a"), bind(Role::TenantAdmin, "a")]);
        assert_eq!(p.role_in("a"), Some(Role::TenantAdmin));
        assert_eq!(p.role_in("b"), None);
    }
}
