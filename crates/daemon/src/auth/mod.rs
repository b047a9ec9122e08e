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
// --- OIDC (#11): JWTs from the configured issuer, keys kept fresh off the request path ---
pub mod jwks;
pub(crate) mod jwks_fetch;
pub mod oidc;
// --- end OIDC ---
pub mod layer;
pub mod token_admin;
pub mod tokens;
pub mod workload;

use bulkhead_core::iam::{Resource, Verb};
use bulkhead_core::{Code, DomainError};

pub use bulkhead_core::iam::{Binding, Role, RoleRef, Roles, Scope};

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A peer of a UNIX socket, by its kernel-reported credentials.
    Socket { uid: u32, gid: u32, pid: i32 },
    /// The TCP listener's configured bearer token (`api.token_file`).
    BearerToken,
    /// An API token made with `bulkhead token create` (its id).
    ApiToken { id: String },
    /// An OIDC identity token from the configured issuer.
    Oidc { issuer: String, subject: String },
    /// A node's workload identity token.
    Workload { tenant: String, node: String },
    /// #15, A: a sandbox's E2B access token (`X-Access-Token`, `crate::e2b::access`): a
    /// developer of its tenant, kept to that one node by the E2B listener.
    Sandbox { tenant: String, node: String },
}

impl Via {
    /// How the principal authenticated, as one word (audit, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Via::Socket { .. } => "socket",
            Via::BearerToken => "bearer_token",
            Via::ApiToken { .. } => "api_token",
            Via::Oidc { .. } => "oidc",
            Via::Workload { .. } => "workload",
            Via::Sandbox { .. } => "sandbox", // #15, A
        }
    }
}

/// Who is calling, how they proved it, and their role bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A stable name for logs and audit (`uid:0`, `token:01J…`, `oidc:alice`).
    pub id: String,
    pub via: Via,
    pub bindings: Vec<Binding>,
    /// When the credential stops being valid (UNIX seconds), for credentials that expire
    /// (API tokens, OIDC and workload JWTs): what it makes (a token) never outlives it.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The bindings that apply in `tenant`.
    pub fn roles_in<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Binding> + 'a {
        self.bindings.iter().filter(move |b| b.applies_to(tenant))
    }

    /// Whether the principal has any role in `tenant` (else the tenant's objects do not exist
    /// for it: 404).
    pub fn has_role_in(&self, tenant: &str) -> bool {
        self.roles_in(tenant).next().is_some()
    }

    pub fn is_global_admin(&self) -> bool {
        self.bindings.iter().any(|b| b.role.is_global_admin())
    }

    /// Whether some binding in `tenant` allows `resource`:`verb`.
    pub fn may(&self, tenant: &str, resource: Resource, verb: Verb) -> bool {
        self.roles_in(tenant).any(|b| b.role.allows(resource, verb))
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
    /// A terminal in a node (`shell` WebSocket).
    ConnectToNode,
    /// A TCP connection into a node (`forward` WebSocket).
    TunnelToNode,
    ReadNodeStats,
    DescribeNode,
    ReadNodeTags,
    UpdateNodeTags,
    ShutdownNode,
    RelaunchNode,
    SuspendNode,
    RestoreNode,
    // API tokens (`/tokens`): the tenant comes from the body or the token, checked again in
    // the handler.
    ListTokens,
    CreateToken,
    RevokeToken,
    /// Rotating the daemon's workload identity signing key.
    RotateIdentity,
    /// The issuer's discovery document and public keys: anyone, no credentials.
    ReadPublicKeys,
    // ---- quotas (#12) ----
    /// A tenant's use against its quotas (`GET /quota`).
    ReadQuota,
    // ---- end quotas ----
    // ---- secrets (#13) ----
    /// Names and metadata of the tenant's secrets, never their content (`GET /secrets`).
    ListSecrets,
    /// Creating or changing a secret (`POST /secrets`, `PATCH /secrets/{name}`).
    WriteSecret,
    DeleteSecret,
    // ---- end secrets ----
    // ---- volumes (#13, helper B) ----
    ListVolumes,
    ReadVolume,
    CreateVolume,
    DeleteVolume,
    SnapshotVolume,
    // ---- end volumes ----
    // ---- commit and fork (#13, helper D2) ----
    /// `GET /vm/commits`, `GET /vm/commits/{id}`.
    ListCommits,
    /// `POST /vm/{node}/commit`.
    CommitNode,
    /// `DELETE /vm/commits/{id}`.
    DeleteCommit,
    /// `POST /vm/commits/{id}/fork`.
    ForkCommit,
    // ---- end commit and fork ----
    // ---- usage (#14, part E) ----
    /// What the tenant's nodes used (`GET /usage`).
    ReadUsage,
    // ---- end usage ----
    // ---- events (#14, part B) ----
    /// `GET /events`: the tenant's event stream.
    ReadEvents,
    // ---- end events ----
    // ---- audit trail (#14, A) ----
    /// `GET /audit`: the audit lines of the tenants the caller may read the trail of.
    ReadAudit,
    // ---- end audit trail ----
    // ---- containerd shim (#16, B1) ----
    /// `POST /vm/{node}/exec/{exec_id}/stdin`: input to a background exec.
    WriteBgExecStdin,
    /// `POST /vm/{node}/exec/{exec_id}/resize`: a background exec's terminal size.
    ResizeBgExec,
    /// `GET /shim/placement`: which tenant and host group a containerd namespace's pods go to.
    ShimPlacement,
    // ---- end containerd shim ----
    // ---- containers in a node (#16, B2) ----
    /// `PUT /vm/{node}/containers/{cid}/rootfs`: a container's files into the node.
    UploadContainerRootfs,
    /// `POST /vm/{node}/containers`: a container's mounts.
    CreateContainer,
    /// `GET /vm/{node}/containers`.
    ListContainers,
    /// `DELETE /vm/{node}/containers/{cid}`: kills its processes, removes it.
    DeleteContainer,
    // ---- end containers ----
}

/// What an action needs of the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No credentials at all (public keys for verifiers).
    Public,
    /// Any role anywhere: the daemon's liveness and version.
    AnyRole,
    /// A role that allows this resource and verb in the object's tenant.
    Rule(Resource, Verb),
    /// `global-admin`.
    GlobalAdmin,
}

/// What each action needs, and why. Deny by default: an action missing here is allowed to
/// nobody (a unit test keeps every action listed).
pub const POLICY: &[(Action, Need, &str)] = {
    use Need::*;
    use Resource::*;
    use Verb::*;
    &[
        (Action::ReadHealth, AnyRole, "liveness of the daemon only"),
        (
            Action::ReadInfo,
            AnyRole,
            "version and driver, nothing of nodes",
        ),
        (
            Action::ReadMetrics,
            Rule(Nodes, Get),
            "counts, never content",
        ),
        (
            Action::ListGroups,
            Rule(Nodes, List),
            "the tenant's templates",
        ),
        (
            Action::ListNodes,
            Rule(Nodes, List),
            "names, addresses, tags and states",
        ),
        (
            Action::ReadNodeHealth,
            Rule(Nodes, Get),
            "whether the agent answers",
        ),
        (
            Action::ListForwards,
            Rule(Nodes, Get),
            "which ports are published",
        ),
        (
            Action::DescribeNode,
            Rule(Nodes, Get),
            "a node's settings and network policy, nothing of its content",
        ),
        (Action::ReadNodeTags, Rule(Nodes, Get), "the node's labels"),
        (
            Action::ReadNodeStats,
            Rule(Nodes, Get),
            "counts, never content",
        ),
        (
            Action::ReadNodeLogs,
            Rule(Nodes, Logs),
            "the console may carry workload output",
        ),
        (
            Action::CopyFromNode,
            Rule(Nodes, Copy),
            "reads workload data",
        ),
        (
            Action::CopyToNode,
            Rule(Nodes, Copy),
            "writes workload data",
        ),
        (
            Action::CreateNode,
            Rule(Nodes, Create),
            "spends the tenant's resources",
        ),
        (
            Action::RelaunchNode,
            Rule(Nodes, Resume),
            "starts a workload, spending the tenant's resources",
        ),
        (
            Action::RestoreNode,
            Rule(Nodes, Resume),
            "starts a workload from its saved memory",
        ),
        (
            Action::ResumeNode,
            Rule(Nodes, Resume),
            "restarts a workload",
        ),
        (
            Action::DeleteNode,
            Rule(Nodes, Delete),
            "destroys workload state",
        ),
        (Action::ExecInNode, Rule(Nodes, Exec), "runs code in a node"),
        (
            Action::ReadBgExecs,
            Rule(Nodes, Exec),
            "background execs' commands, arguments and output are workload data",
        ),
        (
            Action::ControlBgExecs,
            Rule(Nodes, Exec),
            "signals or forgets a workload's command",
        ),
        (
            Action::ConnectToNode,
            Rule(Nodes, Exec),
            "a terminal in a node runs code in it",
        ),
        (Action::PauseNode, Rule(Nodes, Pause), "stops a workload"),
        (Action::ShutdownNode, Rule(Nodes, Pause), "stops a workload"),
        (
            Action::SuspendNode,
            Rule(Nodes, Pause),
            "stops a workload, writing its memory to the host's disk",
        ),
        (
            Action::OpenForward,
            Rule(Nodes, Forward),
            "publishes a node's port on the host",
        ),
        (
            Action::CloseForward,
            Rule(Nodes, Forward),
            "withdraws a published port",
        ),
        (
            Action::TunnelToNode,
            Rule(Nodes, Forward),
            "a TCP connection to a node's port",
        ),
        (
            Action::UpdateNodeTags,
            Rule(Nodes, Update),
            "changes what lists and filters find",
        ),
        (
            Action::ListTokens,
            Rule(Tokens, List),
            "who may call the API, never their secrets",
        ),
        (
            Action::CreateToken,
            Rule(Tokens, Create),
            "grants a role in the tenant",
        ),
        (
            Action::RevokeToken,
            Rule(Tokens, Delete),
            "withdraws a credential",
        ),
        (
            Action::RotateIdentity,
            GlobalAdmin,
            "changes the key every node's identity is signed with",
        ),
        (
            Action::ReadPublicKeys,
            Public,
            "public keys and the issuer's metadata, for verifiers",
        ),
        // ---- quotas (#12) ----
        (
            Action::ReadQuota,
            Rule(Nodes, Get),
            "counts and limits, never content",
        ),
        // ---- end quotas ----
        // ---- secrets (#13) ----
        (
            Action::ListSecrets,
            Rule(Secrets, List),
            "names, sizes, owners and modes, never content",
        ),
        (
            Action::WriteSecret,
            Rule(Secrets, Create),
            "sets what the tenant's nodes are given as credentials",
        ),
        (
            Action::DeleteSecret,
            Rule(Secrets, Delete),
            "withdraws a credential from future nodes",
        ),
        // ---- end secrets ----
        // ---- volumes (#13, helper B): node verbs, as volumes are what nodes mount ----
        (
            Action::ListVolumes,
            Rule(Nodes, List),
            "names, sizes, labels and holders, never content",
        ),
        (
            Action::ReadVolume,
            Rule(Nodes, Get),
            "a volume's settings and snapshots, never content",
        ),
        (
            Action::CreateVolume,
            Rule(Nodes, Create),
            "spends the tenant's storage",
        ),
        (
            Action::DeleteVolume,
            Rule(Nodes, Delete),
            "destroys workload data (volumes, snapshots)",
        ),
        (
            Action::SnapshotVolume,
            Rule(Nodes, Create),
            "copies workload data, spending the tenant's storage",
        ),
        // ---- end volumes ----
        // ---- commit and fork (#13): commits are node content, so node rules govern them ----
        (
            Action::ListCommits,
            Rule(Nodes, List),
            "commit ids, sizes and source node names, never content",
        ),
        (
            Action::CommitNode,
            Rule(Nodes, Copy),
            "reads the node's whole root filesystem into a commit",
        ),
        (
            Action::DeleteCommit,
            Rule(Nodes, Delete),
            "destroys a commit (its files are wiped)",
        ),
        (
            Action::ForkCommit,
            Rule(Nodes, Create),
            "starts a node, spending the tenant's resources",
        ),
        // ---- end commit and fork ----
        // ---- usage (#14, part E) ----
        (
            Action::ReadUsage,
            Rule(Usage, List),
            "figures of what the nodes used, never content",
        ),
        // ---- end usage ----
        // ---- events (#14, part B) ----
        (
            Action::ReadEvents,
            Rule(Events, List),
            "lifecycle and detection events of the tenant, never secrets or tokens",
        ),
        // ---- end events ----
        // ---- audit trail (#14, A) ----
        (
            Action::ReadAudit,
            Rule(Audit, List),
            "who did what in the tenant: principals, actions, objects, outcomes, never secrets",
        ),
        // ---- end audit trail ----
        // ---- containerd shim (#16, B1) ----
        (
            Action::WriteBgExecStdin,
            Rule(Nodes, Exec),
            "input to a workload's command is running code in it",
        ),
        (
            Action::ResizeBgExec,
            Rule(Nodes, Exec),
            "drives a workload's command (SIGWINCH)",
        ),
        (
            Action::ShimPlacement,
            Rule(Nodes, Create),
            "where the caller would create a pod's node: a tenant and host group it may create in",
        ),
        // ---- end containerd shim ----
        // ---- containers in a node (#16, B2) ----
        (
            Action::UploadContainerRootfs,
            Rule(Nodes, Copy),
            "writes files into the node, as its root",
        ),
        (
            Action::CreateContainer,
            Rule(Nodes, Exec),
            "prepares a root for commands to run in",
        ),
        (
            Action::ListContainers,
            Rule(Nodes, Get),
            "ids, roots and mounts of the node's containers",
        ),
        (
            Action::DeleteContainer,
            Rule(Nodes, Exec),
            "kills the container's commands",
        ),
        // ---- end containers ----
    ]
};

impl Action {
    pub fn need(self) -> Option<Need> {
        POLICY
            .iter()
            .find(|(a, _, _)| *a == self)
            .map(|(_, n, _)| *n)
    }
}

/// Why a principal may not do an action in a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No role in the tenant at all: its objects do not exist for the principal (404).
    NoRole,
    /// A role, without this action (403 naming the action).
    Forbidden(DomainError),
}

/// Decides whether `principal` may do `action` in `tenant`. The one authorization decision;
/// every routed request passes it (the layer turns [`Denial::NoRole`] into the same 404 a
/// missing object gets where the route names one).
pub fn authorize(principal: &Principal, action: Action, tenant: &str) -> Result<(), Denial> {
    let need = action.need();
    if matches!(need, Some(Need::Public)) {
        return Ok(());
    }
    if matches!(need, Some(Need::GlobalAdmin)) {
        return if principal.is_global_admin() {
            Ok(())
        } else {
            Err(Denial::Forbidden(DomainError::new(
                Code::Forbidden,
                format!(
                    "{} may not {action:?}: that needs global-admin",
                    principal.id
                ),
            )))
        };
    }
    if !principal.has_role_in(tenant) {
        return Err(Denial::NoRole);
    }
    match need {
        Some(Need::AnyRole) => Ok(()),
        Some(Need::Rule(r, v)) if principal.may(tenant, r, v) => Ok(()),
        Some(Need::Rule(r, v)) => {
            let roles: Vec<String> = principal.roles_in(tenant).map(|b| b.to_string()).collect();
            Err(Denial::Forbidden(DomainError::new(
                Code::Forbidden,
                format!(
                    "{} ({}) may not {action:?} in tenant {tenant:?}: that needs action {:?} on {}; ask its tenant-admin for a role that has it",
                    principal.id,
                    roles.join(", "),
                    v.as_str(),
                    r.as_str()
                ),
            )))
        }
        _ => Err(Denial::Forbidden(DomainError::new(
            Code::Forbidden,
            format!("{action:?} is allowed to nobody"),
        ))),
    }
}

impl Denial {
    /// The error to answer with when there is no object to hide (a tenant-less route).
    pub fn into_error(self, principal: &Principal, tenant: &str) -> DomainError {
        match self {
            Denial::Forbidden(e) => e,
            Denial::NoRole => DomainError::new(
                Code::Forbidden,
                format!(
                    "{} has no role in tenant {tenant:?}: ask its tenant-admin for one",
                    principal.id
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
