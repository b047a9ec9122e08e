//! E2B's control plane (#15, A; ADR 0036): `/sandboxes`, `/v2/sandboxes` and a sandbox's
//! lifecycle, each route declaring the `Action` of the node operation it is. Routes that name
//! a sandbox name it `{node}`, so the authorization layer resolves its tenant (a sandbox of a
//! tenant the key has no role in answers 404, like a missing one) and handlers take `Scoped`.
//!
//! Create goes through `Tenant::create` (admission policy, quotas, rate limits, the conflict
//! rule, audit) like Slicer's; a sandbox's timeout is the node's expiry (`Tenant::set_expiry`,
//! delete, or pause with `autoPause`). Lifecycle routes are in `control_ops.rs`.

use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use bulkhead_api::e2b::{ListedSandbox, NewSandbox};
use bulkhead_api::{CreateNodeRequest, NodeNetworkRequest};
use bulkhead_core::ttl::OnExpiry;
use bulkhead_core::DomainError;
use bulkhead_store::e2b::SandboxRow;
use std::collections::BTreeMap;
use std::time::Duration;

use super::control_ops as ops;
use super::sandbox::{self, now_ms, seconds, Domain, CLIENT_ID};
use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::ApiError;
use crate::http::body::{json_body, AppState, Visible};
use crate::http::query::Query;
use crate::http::Route;
use crate::tenant::Wait;

/// How long a create waits for the node's agent before it fails (and removes the node).
pub const CREATE_WAIT: Duration = Duration::from_secs(300);
/// Page size of `GET /v2/sandboxes` when `limit` is not given, and its largest.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

fn r(
    path: &'static str,
    methods: &'static [(&'static str, Action)],
    handler: axum::routing::MethodRouter<AppState>,
) -> Route {
    Route {
        path,
        methods,
        handler,
    }
}

/// The control plane's routes. Changing a sandbox's timeout can end it, so `/timeout` and
/// `/refreshes` need what deleting it needs.
pub fn table() -> Vec<Route> {
    use Action::*;
    vec![
        r(
            "/sandboxes",
            &[("get", ListNodes), ("post", CreateNode)],
            get(list_v1).post(create_v1),
        ),
        r(
            "/v2/sandboxes",
            &[("get", ListNodes), ("post", CreateNode)],
            get(list_v2).post(create_v2),
        ),
        r(
            "/sandboxes/{node}",
            &[("get", DescribeNode), ("delete", DeleteNode)],
            get(ops::show).delete(ops::kill),
        ),
        r(
            "/sandboxes/{node}/timeout",
            &[("post", DeleteNode)],
            post(ops::set_timeout),
        ),
        r(
            "/sandboxes/{node}/refreshes",
            &[("post", DeleteNode)],
            post(ops::refresh),
        ),
        r(
            "/sandboxes/{node}/pause",
            &[("post", PauseNode)],
            post(ops::pause),
        ),
        r(
            "/sandboxes/{node}/resume",
            &[("post", ResumeNode)],
            post(ops::resume),
        ),
        r(
            "/sandboxes/{node}/connect",
            &[("post", ResumeNode)],
            post(ops::connect),
        ),
        r(
            "/v2/sandboxes/{node}/connect",
            &[("post", ResumeNode)],
            post(ops::connect),
        ),
        r(
            "/sandboxes/{node}/logs",
            &[("get", ReadNodeLogs)],
            get(ops::logs),
        ),
        r(
            "/v2/sandboxes/{node}/logs",
            &[("get", ReadNodeLogs)],
            get(ops::logs_v2),
        ),
        r(
            "/sandboxes/{node}/metrics",
            &[("get", ReadNodeStats)],
            get(ops::metrics),
        ),
    ]
}

/// The one tenant a route without a sandbox acts in: the key's. A key of several tenants (a
/// global-admin's) must use a key of one: E2B's API has no tenant field.
pub fn one_tenant(v: &[std::sync::Arc<App>]) -> Result<&std::sync::Arc<App>, DomainError> {
    match v {
        [one] => Ok(one),
        many => Err(DomainError::invalid(format!(
            "this key acts in several tenants ({}): E2B's API names no tenant, so use a key of one tenant (`bulkhead token create --tenant T --role developer --e2b`)",
            many.iter()
                .map(|a| a.tenant.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `allow_internet_access` and `network` → the node's network override.
fn network_of(b: &NewSandbox) -> Result<Option<NodeNetworkRequest>, DomainError> {
    let cidr = |field: &str, v: &str| -> Result<String, DomainError> {
        let c = if v.contains('/') {
            v.to_string()
        } else {
            format!("{v}/32")
        };
        c.parse::<ipnet::Ipv4Net>().map(|_| c).map_err(|_| {
            DomainError::invalid(format!(
                "network.{field}: {v:?} is not an IPv4 address or CIDR (domain names are not supported here)"
            ))
        })
    };
    let mut allow = Vec::new();
    let mut drop = Vec::new();
    if let Some(n) = &b.network {
        for a in n.allow_out.iter().flatten() {
            allow.push(cidr("allowOut", a)?);
        }
        for d in n.deny_out.iter().flatten() {
            drop.push(cidr("denyOut", d)?);
        }
    }
    if b.allow_internet_access == Some(false) {
        drop.push("0.0.0.0/0".into());
    }
    if allow.is_empty() && drop.is_empty() {
        return Ok(None);
    }
    Ok(Some(NodeNetworkRequest { allow, drop }))
}

async fn create_v1(
    state: State<AppState>,
    visible: Visible,
    who: Extension<Principal>,
    domain: Extension<Domain>,
    audit: crate::audit::slot::AuditSlot,
    q: RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    create(state, visible, who, domain, audit, q, body, 15).await
}

async fn create_v2(
    state: State<AppState>,
    visible: Visible,
    who: Extension<Principal>,
    domain: Extension<Domain>,
    audit: crate::audit::slot::AuditSlot,
    q: RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    create(state, visible, who, domain, audit, q, body, 300).await
}

#[allow(clippy::too_many_arguments)]
async fn create(
    State(_d): State<AppState>,
    Visible(visible): Visible,
    Extension(who): Extension<Principal>,
    Extension(Domain(domain)): Extension<Domain>,
    audit: crate::audit::slot::AuditSlot,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
    default_timeout: i64,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let app = one_tenant(&visible)?.clone();
    audit.tenant_name(&app.tenant.name);
    let b: NewSandbox = json_body(&app, body).await?;
    let unsupported = b.unsupported();
    if !unsupported.is_empty() {
        return Err(DomainError::invalid(format!(
            "{} {} not supported by bulkhead: leave {} out (docs/e2b.md)",
            unsupported.join(", "),
            if unsupported.len() == 1 { "is" } else { "are" },
            if unsupported.len() == 1 { "it" } else { "them" },
        ))
        .into());
    }
    let ttl = seconds("timeout", b.timeout.unwrap_or(default_timeout))?;
    for (k, v) in b.env_vars.iter().flatten() {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(DomainError::invalid(format!(
                "envVars: {k:?} is not an environment variable: names are non-empty without '=' or NUL, values without NUL"
            ))
            .into());
        }
    }
    let t = sandbox::resolve_template(&app, &b.template_id).await?;
    let name = sandbox::new_name(&t.group);
    let req = CreateNodeRequest {
        hostname: Some(name.clone()),
        network: network_of(&b)?,
        image: t.image.clone(),
        ..Default::default()
    };
    let req = app.tenant.admission.create(&who.id, &t.group, req).await?;
    let created = app
        .tenant
        .create(&t.group, req, Wait::Agent, CREATE_WAIT)
        .await?;
    audit.object(format!("node/{}", created.node.hostname));
    let node = app.tenant.node(&created.node.hostname)?;
    let on = if b.auto_pause.unwrap_or(false) {
        OnExpiry::Pause
    } else {
        OnExpiry::Delete
    };
    let env = b.env_vars.clone().unwrap_or_default();
    let node_id = node.row().id.to_string();
    let started = now_ms();
    let record = SandboxRow {
        env_sealed: app.tenant.seal_sandbox_env(&node_id, &env),
        node_id,
        name: name.clone(),
        template: b.template_id.clone(),
        alias: (b.template_id != t.group && t.image.is_none()).then(|| b.template_id.clone()),
        client_id: CLIENT_ID.into(),
        metadata: b.metadata.clone().unwrap_or_default(),
        auto_pause: on == OnExpiry::Pause,
        allow_internet: b.allow_internet_access,
        started_at_ms: started,
        end_at_ms: started + ttl.as_millis() as u64,
    };
    let done = async {
        app.tenant.put_sandbox_record(record).await?;
        app.tenant.set_expiry(&node, Some(ttl), on).await?;
        Ok::<_, DomainError>(())
    }
    .await;
    if let Err(e) = done {
        // Never leave a sandbox without its timeout: remove what was made.
        if let Err(d) = app.tenant.delete(&node).await {
            tracing::error!(node = %name, error = %d.message, "cannot remove a sandbox whose setup failed");
        }
        return Err(e.into());
    }
    let node = app.tenant.node(&name)?;
    let body = sandbox::created(&app, &node, &who, &domain);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// E2B's `metadata` filter as the SDKs send it: `k=v&k2=v2` (URL-encoded once more as the
/// query value, which `Query` decoded), each key and value percent-encoded by the SDK.
pub fn metadata_filter(s: &str) -> Result<BTreeMap<String, String>, DomainError> {
    let dec = |x: &str| -> Result<String, DomainError> {
        let once: Vec<u8> = percent_encoding::percent_decode_str(&x.replace('+', " ")).collect();
        let once = String::from_utf8(once)
            .map_err(|_| DomainError::invalid("metadata: not valid UTF-8"))?;
        let twice: Vec<u8> = percent_encoding::percent_decode_str(&once).collect();
        String::from_utf8(twice).map_err(|_| DomainError::invalid("metadata: not valid UTF-8"))
    };
    let mut m = BTreeMap::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(DomainError::invalid(format!(
                "metadata: {part:?} is not key=value (the filter is key=value pairs joined by &, URL-encoded)"
            )));
        };
        m.insert(dec(k)?, dec(v)?);
    }
    Ok(m)
}

/// Which sandboxes a list asks for.
struct Filter {
    metadata: BTreeMap<String, String>,
    states: Vec<String>,
    template: Option<String>,
}

impl Filter {
    fn parse(q: &Query) -> Result<Filter, DomainError> {
        let mut metadata = BTreeMap::new();
        for m in q.all("metadata") {
            metadata.extend(metadata_filter(&m)?);
        }
        let mut states = Vec::new();
        for s in q.all("state") {
            for one in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                if one != "running" && one != "paused" {
                    return Err(DomainError::invalid(format!(
                        "state: {one:?} is not a sandbox state: running or paused"
                    )));
                }
                states.push(one.to_string());
            }
        }
        Ok(Filter {
            metadata,
            states,
            template: q.one("template")?,
        })
    }

    fn keeps(&self, s: &ListedSandbox) -> bool {
        (self.states.is_empty() || self.states.contains(&s.state))
            && self
                .metadata
                .iter()
                .all(|(k, v)| s.metadata.get(k) == Some(v))
            && self
                .template
                .as_ref()
                .is_none_or(|t| &s.template_id == t || s.alias.as_ref() == Some(t))
    }
}

/// Every sandbox of the visible tenants the filter keeps, oldest first (then by id).
async fn sandboxes(visible: &[std::sync::Arc<App>], f: &Filter) -> Vec<ListedSandbox> {
    let mut v = Vec::new();
    for app in visible {
        app.tenant.prune_sandbox_records().await;
        for row in app.tenant.list().rows() {
            if row.status == bulkhead_core::NodeState::Deleting {
                continue;
            }
            if let Ok(n) = app.tenant.node(&row.name) {
                let s = sandbox::listed(app, &n);
                if f.keeps(&s) {
                    v.push(s);
                }
            }
        }
    }
    v.sort_by(|a, b| (&a.started_at, &a.sandbox_id).cmp(&(&b.started_at, &b.sandbox_id)));
    v
}

/// `GET /sandboxes`: running sandboxes (E2B's first list), with the metadata filter.
async fn list_v1(
    Visible(visible): Visible,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<ListedSandbox>>, ApiError> {
    let q = Query::parse(q.as_deref(), &["metadata", "state"])?;
    let mut f = Filter::parse(&q)?;
    if f.states.is_empty() {
        f.states.push("running".into());
    }
    Ok(Json(sandboxes(&visible, &f).await))
}

fn token_of(s: &ListedSandbox) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}\n{}", s.started_at, s.sandbox_id))
}

fn parse_token(t: &str) -> Result<(String, String), DomainError> {
    use base64::Engine;
    let bad = || {
        DomainError::invalid("nextToken: not a token this server gave: pass the x-next-token header of the previous page")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (a, b) = s.split_once('\n').ok_or_else(bad)?;
    Ok((a.to_string(), b.to_string()))
}

/// `GET /v2/sandboxes`: running and paused sandboxes (or `state`), a page of `limit` after
/// `nextToken`; `x-next-token` names the next page when there is one.
async fn list_v2(Visible(visible): Visible, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(
        q.as_deref(),
        &[
            "metadata",
            "state",
            "limit",
            "nextToken",
            "order",
            "template",
            "startedAfter",
        ],
    )?;
    let f = Filter::parse(&q)?;
    let limit = match q.one("limit")?.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(DomainError::invalid(format!(
                    "limit: {l:?} is not a whole number from 1 to {MAX_LIMIT}"
                ))
                .into())
            }
        },
    };
    let desc = match q.one("order")?.as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(DomainError::invalid(format!("order: {o:?} is not asc or desc")).into())
        }
    };
    let after = q.one("startedAfter")?;
    let mut all = sandboxes(&visible, &f).await;
    if let Some(a) = after.as_deref().filter(|a| !a.is_empty()) {
        all.retain(|s| s.started_at.as_str() > a);
    }
    if desc {
        all.reverse();
    }
    let start = match q.one("nextToken")?.filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => {
            let (at, id) = parse_token(&t)?;
            all.iter()
                .position(|s| {
                    let k = (s.started_at.as_str(), s.sandbox_id.as_str());
                    let c = (at.as_str(), id.as_str());
                    if desc {
                        k < c
                    } else {
                        k > c
                    }
                })
                .unwrap_or(all.len())
        }
    };
    let page: Vec<ListedSandbox> = all.iter().skip(start).take(limit).cloned().collect();
    let more = start + page.len() < all.len();
    let mut resp = Json(&page).into_response();
    if let (true, Some(last)) = (more, page.last()) {
        if let Ok(v) = HeaderValue::from_str(&token_of(last)) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_as_the_sdks_encode_them() {
        // Python: urlencode({quote(k): quote(v)}) → "user=alice&team=a%2Fb" (httpx encodes
        // it once more as the query value; Query decodes that).
        let m = metadata_filter("user=alice&team=a%252Fb").unwrap();
        assert_eq!(m.get("user").map(String::as_str), Some("alice"));
        assert_eq!(m.get("team").map(String::as_str), Some("a/b"));
        assert!(metadata_filter("novalue").is_err());
        assert!(metadata_filter("").unwrap().is_empty());
    }

    #[test]
    fn page_tokens_round_trip() {
        let s = ListedSandbox {
            template_id: "base".into(),
            alias: None,
            sandbox_id: "e2b-abc".into(),
            client_id: "x".into(),
            started_at: "2026-11-30T00:00:00Z".into(),
            end_at: "x".into(),
            cpu_count: 1,
            memory_mb: 1,
            disk_size_mb: 1,
            state: "running".into(),
            envd_version: "x".into(),
            metadata: BTreeMap::new(),
        };
        assert_eq!(
            parse_token(&token_of(&s)).unwrap(),
            (s.started_at.clone(), s.sandbox_id.clone())
        );
        assert!(parse_token("!!").is_err());
    }

    #[test]
    fn timeouts_are_positive_and_bounded() {
        assert!(seconds("timeout", 0).is_err());
        assert!(seconds("timeout", -5).is_err());
        assert_eq!(seconds("timeout", 60).unwrap(), Duration::from_secs(60));
        assert!(seconds("timeout", 40 * 86400).is_err());
    }
}
