//! Admission by the tenant's policy (issue #12, ADR 0024): every create, exec (foreground,
//! background, shell) and forward (port forward, forward tunnel) passes the static rules of
//! `config.policy` (`policy.rs`) and then, when one is configured, the policy webhook
//! (`webhook.rs`), which may allow, deny with a reason, or narrow the request.
//!
//! One [`Admission`] per tenant, made from its config at start; handlers call it once each,
//! after the request is parsed and its node or host group found (so a missing object is
//! still 404) and before anything is done. Invariants:
//! - a tenant without `policy` is admitted exactly as before: nothing checked, nothing sent,
//!   the request passed on unchanged;
//! - every refusal is 403 `policy_denied` naming the rule or the webhook's reason; a webhook
//!   that times out, cannot be reached or answers badly denies (saying which), unless
//!   `on_error: allow`; never a 500;
//! - a webhook's rewritten request is laid over the asked one key by key ([`merge`]: a key
//!   left out keeps its asked value); the result replaces the asked one only when it is narrower
//!   (`policy::narrow_*`) and still within the static rules; otherwise the request is denied.

pub mod policy;
pub mod webhook;

use bulkhead_agent::proto::ExecRequest;
use bulkhead_api::{CreateNodeRequest, ForwardRequest};
use bulkhead_core::config::policy::{OnError, Policy};
use bulkhead_core::{Code, DomainError, HostGroup, TenantConfig};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The longest webhook reason passed on to the caller.
const MAX_REASON: usize = 1024;

/// Which kind of exec is asked (`target.mode` in the webhook's question).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    Foreground,
    Background,
    Shell,
}

impl ExecMode {
    fn as_str(self) -> &'static str {
        match self {
            ExecMode::Foreground => "foreground",
            ExecMode::Background => "background",
            ExecMode::Shell => "shell",
        }
    }
}

/// One tenant's admission: its policy, the groups and image it judges creates by, and its
/// webhook's client.
pub struct Admission {
    tenant: String,
    policy: Policy,
    groups: Vec<HostGroup>,
    image: String,
    hook: Option<webhook::Client>,
}

fn denied(msg: String) -> DomainError {
    DomainError::new(Code::PolicyDenied, msg)
}

impl Admission {
    pub fn new(cfg: &TenantConfig) -> Admission {
        Admission {
            tenant: cfg.tenant.clone(),
            policy: cfg.policy.clone(),
            groups: cfg.groups.clone(),
            image: cfg.image.clone(),
            hook: cfg.policy.webhook.clone().map(webhook::Client::new),
        }
    }

    /// Whether there is anything to check at all (no `policy`: nothing is).
    fn inactive(&self) -> bool {
        self.policy == Policy::default()
    }

    /// A create in `group` by principal `who` (its id): the request to go on with.
    pub async fn create(
        &self,
        who: &str,
        group: &str,
        req: CreateNodeRequest,
    ) -> Result<CreateNodeRequest, DomainError> {
        let Some(g) = self.groups.iter().find(|g| g.name == group) else {
            return Ok(req); // the create answers 404
        };
        if self.inactive() {
            return Ok(req);
        }
        policy::check_userdata(&self.policy, req.userdata.as_deref())?;
        // As the create will make it: the group's defaults filled in.
        let mut asked = req.clone();
        asked.cpus = Some(req.cpus.unwrap_or(g.vcpu));
        asked.ram_bytes = Some(req.ram_bytes.unwrap_or(g.ram_bytes));
        policy::check_create(&self.policy, g, &self.image, &asked)?;
        let target = json!({
            "hostgroup": g.name,
            "driver": g.hypervisor,
            "network_mode": g.network.mode.as_str(),
            "image": self.image,
            "storage_bytes": g.storage_bytes,
        });
        match self.ask(who, "create", target, &asked).await? {
            None => Ok(req),
            Some(v) => {
                let new = policy::narrow_create(&asked, parse(v)?)?;
                policy::check_create(&self.policy, g, &self.image, &new)?;
                Ok(new)
            }
        }
    }

    /// An exec in `node`: the request the agent is to run.
    pub async fn exec(
        &self,
        who: &str,
        node: &str,
        mode: ExecMode,
        req: ExecRequest,
    ) -> Result<ExecRequest, DomainError> {
        if self.inactive() {
            return Ok(req);
        }
        policy::check_exec(&self.policy, &req)?;
        let target = json!({"node": node, "mode": mode.as_str()});
        match self.ask(who, "exec", target, &req).await? {
            None => Ok(req),
            Some(v) => {
                let new = policy::narrow_exec(&req, parse(v)?)?;
                policy::check_exec(&self.policy, &new)?;
                Ok(new)
            }
        }
    }

    /// A write into a node (copy-in, `fs/mkdir`): the owner and permission bits it asks for
    /// (`mode` is the query key or field it came from, and its bits).
    pub fn write(
        &self,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<(&str, u32)>,
    ) -> Result<(), DomainError> {
        policy::check_write(&self.policy, uid, gid, mode)
    }

    /// Whether writes into this tenant's nodes must not set setuid/setgid bits (a tar
    /// upload's entries are stripped of them by the agent's `no_setid`).
    pub fn no_setid(&self) -> bool {
        !self.policy.exec_as_root
    }

    /// A port forward of `node` (`POST /vm/{node}/forwards`).
    pub async fn forward(
        &self,
        who: &str,
        node: &str,
        req: ForwardRequest,
    ) -> Result<ForwardRequest, DomainError> {
        if self.inactive() {
            return Ok(req);
        }
        policy::check_forward(&self.policy, Some(&req))?;
        let mut asked = req.clone();
        asked.bind = Some(policy::forward_bind(&req)?.to_string());
        let target = json!({"node": node, "kind": "port"});
        match self.ask(who, "forward", target, &asked).await? {
            None => Ok(req),
            Some(v) => {
                let new = policy::narrow_forward(&asked, parse(v)?)?;
                policy::check_forward(&self.policy, Some(&new))?;
                Ok(new)
            }
        }
    }

    /// A forward tunnel (`GET /vm/{node}/forward`) to `upstream` (`host:port` in the node).
    pub async fn tunnel(&self, who: &str, node: &str, upstream: &str) -> Result<(), DomainError> {
        if self.inactive() {
            return Ok(());
        }
        policy::check_forward(&self.policy, None)?;
        let target = json!({"node": node, "kind": "tunnel"});
        let asked = json!({ "upstream": upstream });
        match self.ask(who, "forward", target, &asked).await? {
            Some(v) if v != asked => Err(denied(
                "policy webhook widened the request (a tunnel's upstream cannot change): a webhook may only narrow a request, so it is denied".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The webhook's word on `request`: `None` to go on as asked, `Some` a rewritten request
    /// (still to be checked), or the denial.
    async fn ask<T: serde::Serialize>(
        &self,
        who: &str,
        action: &str,
        target: Value,
        request: &T,
    ) -> Result<Option<Value>, DomainError> {
        let Some(hook) = &self.hook else {
            return Ok(None);
        };
        let question = json!({
            "tenant": self.tenant,
            "principal": who,
            "action": action,
            "target": target,
            "request": request,
        });
        match hook.ask(&question).await {
            Ok(a) if !a.allow => {
                let mut reason = a
                    .reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "(no reason given)".into());
                if reason.len() > MAX_REASON {
                    let mut cut = MAX_REASON;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason.truncate(cut);
                    reason.push('…');
                }
                tracing::info!(tenant = %self.tenant, principal = who, action, %reason, "policy webhook denied");
                Err(denied(format!(
                    "policy webhook denied the request: {reason}"
                )))
            }
            Ok(a) => Ok(a.request.map(|answer| merge(&question["request"], answer))),
            Err(e) => match hook.hook.on_error {
                OnError::Deny => {
                    tracing::warn!(tenant = %self.tenant, action, error = %e, "policy webhook failed: denying");
                    Err(denied(format!(
                        "{e}: the request is denied (policy.webhook.on_error is deny)"
                    )))
                }
                OnError::Allow => {
                    tracing::warn!(tenant = %self.tenant, action, error = %e, "policy webhook failed: allowing (on_error: allow)");
                    Ok(None)
                }
            },
        }
    }
}

/// A webhook's rewritten request laid over the asked one: each top-level key the answer
/// gives replaces the asked one's, a key left out keeps its asked value (operator guide,
/// "Admission policy"). An answer that is not an object is taken as it is (and refused by
/// [`parse`] unless it is one).
fn merge(asked: &Value, answer: Value) -> Value {
    match (asked, answer) {
        (Value::Object(asked), Value::Object(answer)) => {
            let mut out = asked.clone();
            out.extend(answer);
            Value::Object(out)
        }
        (_, answer) => answer,
    }
}

/// A webhook's rewritten request in the shape it was sent.
fn parse<T: DeserializeOwned>(v: Value) -> Result<T, DomainError> {
    serde_json::from_value(v).map_err(|e| {
        denied(format!(
            "policy webhook's rewritten request is not one this route takes ({e}), which counts as widening it: denied"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_laid_over_the_asked_request() {
        // As `ask` sends it: the whole request, serialized.
        let asked = serde_json::to_value(ExecRequest {
            cmd: "id".into(),
            env: vec!["A=1".into()],
            timeout_ms: Some(5),
            ..Default::default()
        })
        .unwrap();
        let got = merge(&asked, json!({"uid": 1000}));
        assert_eq!((&got["cmd"], &got["uid"]), (&json!("id"), &json!(1000)));
        let e: ExecRequest = parse(got).unwrap();
        assert_eq!((e.uid, e.env.len(), e.timeout_ms), (1000, 1, Some(5)));
        // An explicit null is a value, and a non-object answer is not merged.
        assert_eq!(
            merge(&asked, json!({"timeout_ms": null}))["timeout_ms"],
            Value::Null
        );
        assert_eq!(merge(&asked, json!("x")), json!("x"));
        assert!(parse::<ExecRequest>(json!("x")).is_err());
    }
}
