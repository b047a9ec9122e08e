//! The conflict rule (issue #12, ADR 0025): a create that names a `hostname` the tenant already
//! has returns that node (200) when it asks for the same thing, and answers 409 `conflict`
//! naming the fields that differ when it does not.
//!
//! "The same thing" is the normalized create request, [`CreateSpec`]: the request after the
//! host group's defaults (cpus, ram, storage, userdata), tags as a set, the asked address and
//! network override as given. It is recorded with the node (`NodeRow::spec`) and compared in
//! the store's writer job that would insert the node (`Tenant::admit`), together with the
//! quota check, so of two identical creates at once one makes the node and the other returns
//! it, whatever state it is in (`Creating` included). A create that asked to wait
//! (`wait=agent`, `wait=userdata`) and is answered with a node still on its way waits for it
//! as far as it asked, within its own timeout ([`Tenant::wait_existing`]); nothing runs twice.
//!
//! Invariants:
//! - only a create that named its hostname is ever answered with an existing node; a name
//!   from the group's counter that meets a taken name stays the store's `already_exists`;
//! - a node being deleted is a conflict, never returned;
//! - a node recorded before its spec was (schema version 4) is a conflict, named so: nothing
//!   is guessed about what made it.

use bulkhead_api::{CreateNodeRequest, CreatedNode};
use bulkhead_core::{Code, DomainError, HostGroup, NodeState};
use bulkhead_store::{CommitId, NodeRow, Snapshot, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Tenant, Wait};

/// #13 commit and fork: the commit id a create asks for with `image`, canonical; `None` for an image name.
pub fn commit_image(req: &CreateNodeRequest) -> Option<String> {
    req.image
        .as_deref()
        .and_then(|s| CommitId::parse(s).ok())
        .map(|id| id.to_string())
}

/// The normalized create request of a node, as recorded with it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSpec {
    pub hostgroup: String,
    pub cpus: u32,
    pub ram_bytes: u64,
    pub storage_bytes: u64,
    /// Sorted, each once: the order of tags changes nothing.
    pub tags: Vec<String>,
    /// SHA-256 (hex) of the userdata that runs (the request's, else the group's); the script
    /// itself is in the node's row already.
    pub userdata_sha256: Option<String>,
    /// The address asked for, if any (normalized when it parses).
    pub ip: Option<String>,
    pub network_allow: Option<Vec<String>>,
    pub network_drop: Option<Vec<String>>,
    pub persistent: bool,
    /// secrets (#13): the names the node is given, sorted, each once (absent in specs
    /// recorded before: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// volumes (#13): `id:path[:ro]`, paths normalized, sorted (absent in older records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// #13 commit and fork: the commit the node starts from (its id); `None`: the group's
    /// image (a group's image name given as `image` is normalized to `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl CreateSpec {
    /// The spec of a create after validation: `cpus` and `ram_bytes` with the group's
    /// defaults applied, `userdata` the script that will run.
    pub fn of(
        g: &HostGroup,
        req: &CreateNodeRequest,
        cpus: u32,
        ram_bytes: u64,
        userdata: Option<&str>,
    ) -> Self {
        let mut tags = req.tags.clone();
        tags.sort();
        tags.dedup();
        let mut secrets = req.secrets.clone(); // #13
        secrets.sort();
        secrets.dedup();
        CreateSpec {
            hostgroup: g.name.clone(),
            cpus,
            ram_bytes,
            storage_bytes: g.storage_bytes,
            tags,
            userdata_sha256: userdata.map(|u| {
                ring::digest::digest(&ring::digest::SHA256, u.as_bytes())
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            }),
            ip: req.ip.as_ref().map(|ip| {
                ip.trim()
                    .parse::<std::net::Ipv4Addr>()
                    .map_or_else(|_| ip.clone(), |a| a.to_string())
            }),
            network_allow: req.network.as_ref().map(|n| n.allow.clone()),
            network_drop: req.network.as_ref().map(|n| n.drop.clone()),
            persistent: req.persistent,
            secrets,                                             // #13
            volumes: super::volume_rules::spec_of(&req.volumes), // volumes (#13)
            image: commit_image(req),                            // #13
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The fields where `asked` differs from `self` (the existing node's), as the 409 names
    /// them: scalars with both values (`cpus (2 vs 4)`), lists and scripts by name only.
    pub fn differences(&self, asked: &CreateSpec) -> Vec<String> {
        let mut out = Vec::new();
        let mut both = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name} ({a} vs {b})"));
            }
        };
        both(
            "hostgroup",
            format!("{:?}", self.hostgroup),
            format!("{:?}", asked.hostgroup),
        );
        both("cpus", self.cpus.to_string(), asked.cpus.to_string());
        both(
            "ram_bytes",
            self.ram_bytes.to_string(),
            asked.ram_bytes.to_string(),
        );
        both(
            "storage_bytes",
            self.storage_bytes.to_string(),
            asked.storage_bytes.to_string(),
        );
        let show = |ip: &Option<String>| ip.clone().unwrap_or_else(|| "any".into());
        both("ip", show(&self.ip), show(&asked.ip));
        both(
            "persistent",
            self.persistent.to_string(),
            asked.persistent.to_string(),
        );
        if self.tags != asked.tags {
            out.push("tags".into());
        }
        if self.volumes != asked.volumes {
            out.push("volumes".into()); // volumes (#13)
        }
        if self.userdata_sha256 != asked.userdata_sha256 {
            out.push("userdata".into());
        }
        if self.secrets != asked.secrets {
            out.push("secrets".into()); // #13
        }
        if (&self.network_allow, &self.network_drop) != (&asked.network_allow, &asked.network_drop)
        {
            out.push("network".into());
        }
        if self.image != asked.image {
            out.push("image".into()); // #13
        }
        out
    }
}

/// What the store's writer job answers a create with instead of inserting.
#[derive(Debug)]
pub enum Admit {
    /// Refused: a quota, a conflict, or anything the insert itself failed with.
    Refused(DomainError),
    /// The create names a node that exists with the same spec: that node is the answer.
    Existing(Arc<NodeRow>),
}

impl From<DomainError> for Admit {
    fn from(e: DomainError) -> Self {
        Admit::Refused(e)
    }
}

impl From<StoreError> for Admit {
    fn from(e: StoreError) -> Self {
        Admit::Refused(e.into())
    }
}

/// The answer to a create: the node, and whether this request made it (201) or found it
/// made by an earlier one with the same spec (200).
#[derive(Debug, Clone)]
pub struct Created {
    pub node: CreatedNode,
    pub existed: bool,
}

impl Created {
    pub fn of(row: &NodeRow, existed: bool) -> Self {
        Created {
            node: CreatedNode {
                hostname: row.name.clone(),
                hostgroup: row.hostgroup.clone(),
                ip: row.ip.clone(),
                created_at: row.created_at.clone(),
                arch: std::env::consts::ARCH.into(),
            },
            existed,
        }
    }
}

impl Admit {
    /// The create's answer when the writer did not insert.
    pub fn into_answer(self) -> Result<Created, DomainError> {
        match self {
            Admit::Existing(row) => Ok(Created::of(&row, true)),
            Admit::Refused(e) => Err(e),
        }
    }
}

/// The conflict rule for a create of `name` with `asked`, against the committed rows: `Ok`
/// when no node has the name, [`Admit::Existing`] when one has it with the same spec, a 409
/// otherwise. `named`: the create chose the name (else the rule does not apply, and the
/// insert's own `already_exists` answers).
pub fn check(snap: &Snapshot, name: &str, named: bool, asked: &CreateSpec) -> Result<(), Admit> {
    if !named {
        return Ok(());
    }
    let Some(row) = snap.rows().iter().find(|r| r.name == name) else {
        return Ok(());
    };
    if row.status == NodeState::Deleting {
        return Err(Admit::Refused(DomainError::new(
            Code::Conflict,
            format!("node {name:?} exists and is being deleted: retry the create once it is gone"),
        )));
    }
    let had = row
        .spec
        .as_deref()
        .and_then(|s| serde_json::from_str::<CreateSpec>(s).ok());
    let diff = match &had {
        Some(had) => had.differences(asked),
        None => vec!["spec (unknown: node made before this release)".to_string()],
    };
    if diff.is_empty() {
        return Err(Admit::Existing(row.clone()));
    }
    Err(Admit::Refused(DomainError::new(
        Code::Conflict,
        format!(
            "node {name:?} exists with a different spec (existing vs asked): {}: delete it first, or choose another hostname",
            diff.join(", ")
        ),
    )))
}

impl Tenant {
    /// A create answered with an existing node (the conflict rule) waits as its own `wait`
    /// asks: for the earlier create to start the node, then for its agent, then (userdata)
    /// for its userdata to have run, which the earlier create or its background run does;
    /// it never runs it again. A node that stopped on the way is answered as it is; one the
    /// earlier create removed (it failed) answers 409 `conflict`, to retry.
    pub(super) async fn wait_existing(
        self: &Arc<Self>,
        name: &str,
        wait: Wait,
        deadline: Instant,
    ) -> Result<(), DomainError> {
        if wait == Wait::None {
            return Ok(());
        }
        let gone = || {
            DomainError::new(
                Code::Conflict,
                format!("node {name:?} was being made by an earlier create with the same spec, which failed and removed it: retry the create"),
            )
        };
        let late = |what: &str| {
            DomainError::new(
                Code::Timeout,
                format!("node {name:?}, made by an earlier create with the same spec, {what} in time; it stays: retry the create, or give it a longer timeout"),
            )
        };
        // `None`: removed; `Some(true)`: as far as asked; `Some(false)`: not yet.
        let poll = |done: &dyn Fn(&NodeRow) -> bool| -> Option<bool> {
            let r = self.store.get(name)?;
            Some(r.status != NodeState::Creating && (r.status != NodeState::Running || done(&r)))
        };
        let until = |done: &'static (dyn Fn(&NodeRow) -> bool + Sync), what: &'static str| async move {
            loop {
                match poll(done) {
                    None => return Err(gone()),
                    Some(true) => return Ok(()),
                    Some(false) if Instant::now() >= deadline => return Err(late(what)),
                    Some(false) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        };
        until(&|_| true, "was not started").await?;
        if self.store.get(name).map(|r| r.status) != Some(NodeState::Running) {
            return Ok(());
        }
        if let Err(e) = self.wait_agent(name, deadline).await {
            return Err(match self.store.get(name) {
                None => gone(),
                Some(_) => {
                    DomainError::new(e.code, e.message.replace("; the node was removed", ""))
                }
            });
        }
        if wait == Wait::Userdata {
            until(
                &|r| r.userdata.is_none() || r.userdata_exit.is_some(),
                "did not finish its userdata",
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_api::NodeNetworkRequest;

    fn group() -> HostGroup {
        bulkhead_core::TenantConfig::parse(
            "config:\n  host_groups: [{name: web, vcpu: 4, ram_gb: 2, storage_size: 5G}]\n",
        )
        .unwrap()
        .groups[0]
            .clone()
    }

    fn req(f: impl FnOnce(&mut CreateNodeRequest)) -> CreateNodeRequest {
        let mut r = CreateNodeRequest {
            hostname: Some("web-a".into()),
            tags: vec!["b".into(), "a".into()],
            ..Default::default()
        };
        f(&mut r);
        r
    }

    fn spec(r: &CreateNodeRequest) -> CreateSpec {
        let g = group();
        let ud = r.userdata.as_deref();
        CreateSpec::of(
            &g,
            r,
            r.cpus.unwrap_or(g.vcpu),
            r.ram_bytes.unwrap_or(g.ram_bytes),
            ud,
        )
    }

    #[test]
    fn defaults_and_order_make_no_difference() {
        let plain = spec(&req(|_| {}));
        assert_eq!(plain.cpus, 4);
        assert_eq!(plain.storage_bytes, 5 << 30);
        assert_eq!(plain.tags, vec!["a", "b"]);
        // The group's defaults written out, tags in another order and twice: the same spec.
        let explicit = spec(&req(|r| {
            r.cpus = Some(4);
            r.ram_bytes = Some(2 << 30);
            r.tags = vec!["a".into(), "b".into(), "a".into()];
        }));
        assert_eq!(plain.differences(&explicit), Vec::<String>::new());
        let back: CreateSpec = serde_json::from_str(&plain.to_json()).unwrap();
        assert_eq!(back, plain);
        let ip = |s: &str| spec(&req(|r| r.ip = Some(s.into())));
        assert_eq!(ip(" 10.0.0.5").ip.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn each_difference_is_named() {
        let base = spec(&req(|_| {}));
        let cases: Vec<(CreateNodeRequest, &str)> = vec![
            (req(|r| r.cpus = Some(2)), "cpus (4 vs 2)"),
            (
                req(|r| r.ram_bytes = Some(1 << 30)),
                "ram_bytes (2147483648 vs 1073741824)",
            ),
            (req(|r| r.tags = vec!["a".into()]), "tags"),
            (req(|r| r.userdata = Some("echo".into())), "userdata"),
            (req(|r| r.secrets = vec!["db".into()]), "secrets"), // #13
            (
                req(|r| r.ip = Some("10.0.0.5".into())),
                "ip (any vs 10.0.0.5)",
            ),
            (
                req(|r| {
                    r.network = Some(NodeNetworkRequest {
                        allow: vec!["1.1.1.1/32".into()],
                        drop: vec![],
                    })
                }),
                "network",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(base.differences(&spec(&r)), vec![want.to_string()]);
        }
        let mut other = base.clone();
        other.hostgroup = "db".into();
        other.storage_bytes = 1 << 30;
        assert_eq!(
            base.differences(&other),
            vec![
                "hostgroup (\"web\" vs \"db\")".to_string(),
                "storage_bytes (5368709120 vs 1073741824)".to_string()
            ]
        );
    }

    #[tokio::test]
    async fn the_rule_against_committed_rows() {
        let d = tempfile::tempdir().unwrap();
        let s = bulkhead_store::Store::open(&d.path().join("s.db"), "t").unwrap();
        let asked = spec(&req(|_| {}));
        let new = |name: &str, spec: Option<String>| bulkhead_store::NewNode {
            name: name.into(),
            hostgroup: "web".into(),
            status: NodeState::Running,
            ip: String::new(),
            cpus: 4,
            ram_bytes: 2 << 30,
            tags: vec![],
            persistent: false,
            created_at: "2026-01-01T00:00:00Z".into(),
            network: None,
            userdata: None,
            storage_bytes: Some(5 << 30),
            spec,
        };
        s.insert(new("web-a", Some(asked.to_json()))).await.unwrap();
        s.insert(new("web-old", None)).await.unwrap();
        let snap = s.snapshot();
        assert!(check(&snap, "web-new", true, &asked).is_ok());
        assert!(
            check(&snap, "web-a", false, &asked).is_ok(),
            "a counter's name is not the rule's"
        );
        match check(&snap, "web-a", true, &asked) {
            Err(Admit::Existing(r)) => assert_eq!(r.name, "web-a"),
            other => panic!("{other:?}"),
        }
        let two = spec(&req(|r| {
            r.cpus = Some(2);
            r.tags = vec![];
        }));
        let Err(Admit::Refused(e)) = check(&snap, "web-a", true, &two) else {
            panic!("a different spec was not refused")
        };
        assert_eq!(e.code, Code::Conflict);
        assert!(
            e.message
                .starts_with("node \"web-a\" exists with a different spec (existing vs asked): cpus (4 vs 2), tags:"),
            "{}",
            e.message
        );
        let Err(Admit::Refused(e)) = check(&snap, "web-old", true, &asked) else {
            panic!("a row without a spec was not refused")
        };
        assert!(
            e.message
                .contains("spec (unknown: node made before this release)"),
            "{}",
            e.message
        );
        s.set_status("web-a", NodeState::Deleting).await.unwrap();
        let Err(Admit::Refused(e)) = check(&s.snapshot(), "web-a", true, &asked) else {
            panic!("a deleting node was returned")
        };
        assert_eq!(e.code, Code::Conflict);
        assert!(e.message.contains("being deleted"), "{}", e.message);
    }
}
