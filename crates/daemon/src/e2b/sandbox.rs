//! A node seen as an E2B sandbox (#15, A): which host group and image a `templateID` names,
//! and the views the control plane answers with (`Sandbox`, `ListedSandbox`,
//! `SandboxDetail`), from the node's row, its sandbox record and its expiry.
//!
//! Templates (DESIGN-15): a host group's name → that group; the tenant's image name or one of
//! its commit ids (#13) → the tenant's first host group with it; `base` (the SDKs' default) →
//! the first host group. Anything else: 404 naming what exists.

use bulkhead_api::e2b::{Lifecycle, ListedSandbox, Sandbox, SandboxDetail};
use bulkhead_core::ttl::OnExpiry;
use bulkhead_core::{DomainError, NodeState};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::tenant::NodeRef;

/// The domain sandboxes report (`config.api.e2b.domain`), put in each request by the edge.
#[derive(Clone)]
pub struct Domain(pub std::sync::Arc<str>);

/// A timeout in seconds as E2B gives it, checked as a node TTL (1 s to 30 days).
pub fn seconds(field: &str, s: i64) -> Result<std::time::Duration, DomainError> {
    if s <= 0 {
        return Err(DomainError::invalid(format!(
            "{field}: {s} is not a positive number of seconds"
        )));
    }
    bulkhead_core::ttl::check(field, std::time::Duration::from_secs(s as u64))
        .map_err(|e| DomainError::invalid(e.to_string()))
}

/// The SDKs' default template.
pub const BASE: &str = "base";
/// What `clientID` answers (E2B's id of the machine a sandbox runs on).
pub const CLIENT_ID: &str = "bulkhead";

/// Where and from what a template makes a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub group: String,
    /// A commit id to start from; `None`: the tenant's image.
    pub image: Option<String>,
}

/// Resolves `templateID` in the tenant of `app`.
pub async fn resolve_template(app: &App, id: &str) -> Result<Template, DomainError> {
    let cfg = &app.tenant.cfg;
    let first = cfg
        .groups
        .first()
        .map(|g| g.name.clone())
        .ok_or_else(|| DomainError::not_found("the tenant has no host group"))?;
    // `name:tag` (E2B's template tags): only the name counts here.
    let id = id.split_once(':').map_or(id, |(n, _)| n);
    if id == BASE || id == cfg.image {
        return Ok(Template {
            group: first,
            image: None,
        });
    }
    if cfg.group(id).is_some() {
        return Ok(Template {
            group: id.to_string(),
            image: None,
        });
    }
    if app.tenant.has_commit(id).await {
        return Ok(Template {
            group: first,
            image: Some(id.to_string()),
        });
    }
    let groups: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
    Err(DomainError::not_found(format!(
        "template {id:?} not found: use {BASE:?}, a host group ({}), the image {:?}, or a commit id (`GET /vm/commits`)",
        groups.join(", "),
        cfg.image
    )))
}

/// E2B's state of a node: `running` or `paused` (a stopped or suspended node cannot run
/// commands until resumed either).
pub fn state(s: NodeState) -> &'static str {
    match s {
        NodeState::Creating | NodeState::Running => "running",
        _ => "paused",
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339_ms(ms: u64) -> String {
    crate::fsutil::rfc3339(ms / 1000)
}

/// When the sandbox ends: its expiry, else its record's last end, else its start.
pub fn end_at(app: &App, n: &NodeRef) -> String {
    if let Some((at, _)) = app.tenant.expiry(n) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        return rfc3339_ms(ms);
    }
    match app.tenant.sandbox_record(n) {
        Some(r) => rfc3339_ms(r.end_at_ms),
        None => n.row().created_at.clone(),
    }
}

/// What happens when the sandbox's timeout passes.
pub fn on_timeout(app: &App, n: &NodeRef) -> OnExpiry {
    match app.tenant.sandbox_record(n) {
        Some(r) if r.auto_pause => OnExpiry::Pause,
        _ => OnExpiry::Delete,
    }
}

/// The sandbox's access token, for a caller that may run commands in it (the token grants
/// that); `None` otherwise.
pub fn token_for(app: &App, n: &NodeRef, who: &Principal) -> Option<String> {
    crate::auth::authorize(who, Action::ExecInNode, &app.tenant.name)
        .ok()
        .map(|()| super::access::access_token(app, n))
}

pub fn listed(app: &App, n: &NodeRef) -> ListedSandbox {
    let row = n.row();
    let rec = app.tenant.sandbox_record(n);
    ListedSandbox {
        template_id: rec
            .as_ref()
            .map(|r| r.template.clone())
            .unwrap_or_else(|| row.hostgroup.clone()),
        alias: rec.as_ref().and_then(|r| r.alias.clone()),
        sandbox_id: row.name.clone(),
        client_id: CLIENT_ID.into(),
        started_at: row.created_at.clone(),
        end_at: end_at(app, n),
        cpu_count: row.cpus,
        memory_mb: row.ram_bytes >> 20,
        disk_size_mb: row.storage_bytes.unwrap_or(0) >> 20,
        state: state(row.status).into(),
        envd_version: super::envd::ENVD_VERSION.into(),
        metadata: rec.map(|r| r.metadata.clone()).unwrap_or_default(),
    }
}

pub fn detail(app: &App, n: &NodeRef, who: &Principal, domain: &str) -> SandboxDetail {
    let rec = app.tenant.sandbox_record(n);
    SandboxDetail {
        listed: listed(app, n),
        envd_access_token: token_for(app, n, who),
        allow_internet_access: rec.as_ref().and_then(|r| r.allow_internet),
        domain: Some(domain.to_string()),
        lifecycle: Lifecycle {
            auto_resume: false,
            on_timeout: match on_timeout(app, n) {
                OnExpiry::Pause => "pause",
                OnExpiry::Delete => "kill",
            }
            .into(),
        },
    }
}

pub fn created(app: &App, n: &NodeRef, who: &Principal, domain: &str) -> Sandbox {
    let l = listed(app, n);
    Sandbox {
        template_id: l.template_id,
        sandbox_id: l.sandbox_id,
        client_id: l.client_id,
        envd_version: l.envd_version,
        alias: l.alias,
        envd_access_token: token_for(app, n, who),
        traffic_access_token: None,
        domain: Some(domain.to_string()),
    }
}

/// A fresh sandbox id in host group `group`: `<group>-<random a-z0-9>` (unguessable: the
/// in-sandbox API tells whether an id exists before it checks the token, as E2B's does).
pub fn new_name(group: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = 20usize.min(62usize.saturating_sub(group.len())).max(4);
    let mut b = vec![0u8; len];
    getrandom::fill(&mut b).expect("the kernel's random source is unavailable");
    let s: String = b
        .iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect();
    format!("{group}-{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_labels_of_their_group() {
        let a = new_name("e2b");
        assert!(a.starts_with("e2b-") && a.len() == 24, "{a}");
        assert!(bulkhead_api::names::validate_label("node", &a).is_ok());
        assert_ne!(a, new_name("e2b"));
        let long = "g".repeat(50);
        assert!(bulkhead_api::names::validate_label("node", &new_name(&long)).is_ok());
    }

    #[test]
    fn states() {
        assert_eq!(state(NodeState::Running), "running");
        assert_eq!(state(NodeState::Creating), "running");
        assert_eq!(state(NodeState::Paused), "paused");
        assert_eq!(state(NodeState::Suspended), "paused");
    }
}
