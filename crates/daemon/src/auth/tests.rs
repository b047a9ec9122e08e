//! Unit tests of the authorization decision and the policy table.
use super::*;

fn principal(bindings: &[&str]) -> Principal {
    let roles = Roles::default();
    Principal {
        expires_at: None,
        id: "test".into(),
        via: Via::BearerToken,
        bindings: bindings
            .iter()
            .map(|b| roles.parse_binding(b).unwrap())
            .collect(),
    }
}

pub const ALL: [Action; 57] = [
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
    Action::TunnelToNode,
    Action::ReadNodeStats,
    Action::DescribeNode,
    Action::ReadNodeTags,
    Action::UpdateNodeTags,
    Action::ShutdownNode,
    Action::RelaunchNode,
    Action::SuspendNode,
    Action::RestoreNode,
    Action::ListTokens,
    Action::CreateToken,
    Action::RevokeToken,
    Action::RotateIdentity,
    Action::ReadPublicKeys,
    Action::ReadQuota, // quotas (#12)
    // secrets (#13)
    Action::ListSecrets,
    Action::WriteSecret,
    Action::DeleteSecret,
    // volumes (#13)
    Action::ListVolumes,
    Action::ReadVolume,
    Action::CreateVolume,
    Action::DeleteVolume,
    Action::SnapshotVolume,
    // commit and fork (#13)
    Action::ListCommits,
    Action::CommitNode,
    Action::DeleteCommit,
    Action::ForkCommit,
    // usage (#14, part E)
    Action::ReadUsage,
    // events (#14, part B)
    Action::ReadEvents,
    // audit trail (#14, A)
    Action::ReadAudit,
    // containerd shim (#16, B1)
    Action::WriteBgExecStdin,
    Action::ResizeBgExec,
    Action::ShimPlacement,
    // containers in a node (#16, B2)
    Action::UploadContainerRootfs,
    Action::CreateContainer,
    Action::ListContainers,
    Action::DeleteContainer,
];

#[test]
fn usage_is_every_role_of_its_tenant() {
    // #14, part E: viewer and up read their tenant's usage; nobody another tenant's.
    for r in ["viewer", "developer", "tenant-admin"] {
        let p = principal(&[&format!("{r}@a")]);
        assert!(authorize(&p, Action::ReadUsage, "a").is_ok(), "{r}");
        assert_eq!(authorize(&p, Action::ReadUsage, "b"), Err(Denial::NoRole));
    }
}

#[test]
fn secrets_content_is_the_tenant_admins() {
    let dev = principal(&["developer@a"]);
    assert!(authorize(&dev, Action::ListSecrets, "a").is_ok());
    for a in [Action::WriteSecret, Action::DeleteSecret] {
        assert!(
            matches!(authorize(&dev, a, "a"), Err(Denial::Forbidden(_))),
            "{a:?}"
        );
    }
    let viewer = principal(&["viewer@a"]);
    assert!(authorize(&viewer, Action::ListSecrets, "a").is_err());
    let ta = principal(&["tenant-admin@a"]);
    for a in [
        Action::ListSecrets,
        Action::WriteSecret,
        Action::DeleteSecret,
    ] {
        assert!(authorize(&ta, a, "a").is_ok(), "{a:?}");
        assert_eq!(authorize(&ta, a, "b"), Err(Denial::NoRole));
    }
}

#[test]
fn the_audit_trail_is_the_admins() {
    // #14, A: tenant-admin of its tenant and global-admin; developers and viewers not.
    let ta = principal(&["tenant-admin@a"]);
    assert!(authorize(&ta, Action::ReadAudit, "a").is_ok());
    assert_eq!(authorize(&ta, Action::ReadAudit, "b"), Err(Denial::NoRole));
    for r in ["developer@a", "viewer@a"] {
        let p = principal(&[r]);
        assert!(
            matches!(
                authorize(&p, Action::ReadAudit, "a"),
                Err(Denial::Forbidden(_))
            ),
            "{r}"
        );
    }
}

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
    let dev = principal(&["developer@a"]);
    assert!(authorize(&dev, Action::ExecInNode, "a").is_ok());
    assert_eq!(
        authorize(&dev, Action::ExecInNode, "b"),
        Err(Denial::NoRole)
    );
    assert!(authorize(&dev, Action::CreateToken, "a").is_err());
    let viewer = principal(&["viewer@a"]);
    assert!(authorize(&viewer, Action::ListNodes, "a").is_ok());
    assert!(authorize(&viewer, Action::ReadNodeLogs, "a").is_ok());
    assert!(authorize(&viewer, Action::ReadQuota, "a").is_ok()); // quotas (#12)
    for a in [Action::ExecInNode, Action::CopyFromNode, Action::CreateNode] {
        let Err(Denial::Forbidden(e)) = authorize(&viewer, a, "a") else {
            panic!("{a:?} allowed to a viewer")
        };
        assert_eq!(e.code, Code::Forbidden);
        assert!(e.message.contains("needs action"), "{}", e.message);
    }
    let global = principal(&["global-admin"]);
    for a in ALL {
        assert!(authorize(&global, a, "any").is_ok());
    }
    // Nobody with no binding at all gets anything but the public keys.
    let nobody = principal(&[]);
    for a in ALL {
        assert_eq!(
            authorize(&nobody, a, "a").is_ok(),
            a == Action::ReadPublicKeys,
            "{a:?}"
        );
    }
    // tenant-admin is not global-admin.
    let ta = principal(&["tenant-admin@a"]);
    assert!(authorize(&ta, Action::CreateToken, "a").is_ok());
    assert!(matches!(
        authorize(&ta, Action::RotateIdentity, "a"),
        Err(Denial::Forbidden(_))
    ));
}

#[test]
fn any_binding_in_the_tenant_may_allow() {
    let p = principal(&["viewer@a", "developer"]);
    assert!(p.may("a", Resource::Nodes, Verb::Exec));
    assert!(p.may("z", Resource::Nodes, Verb::Exec));
    assert!(!p.may("a", Resource::Tokens, Verb::Create));
}
