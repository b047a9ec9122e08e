//! The audit layer (#14, part A; ADR 0031): the outermost layer of the API. It gives every
//! request an id (the client's `x-request-id` when it is sane, else a new ULID; echoed in the
//! answer) and an [`AuditSlot`] that authentication, authorization and the handler fill, and
//! once the answer is known it records one line in the right trail:
//!
//! - outcome: `allowed` for 1xx-3xx; `denied` for 401, 403, 429 and the 404 that hides an
//!   object of a tenant the caller has no role in; `failed` for any other 4xx or 5xx;
//! - reason: the error's code and message (`ApiError` leaves them in the answer's
//!   extensions); an `invalid_request` message of an action whose input may carry secrets is
//!   left out (parsers echo what they could not read);
//! - trail: the tenant the handler named, else the tenant of the route's node or group, else
//!   the only tenant a route over the daemon showed, else the daemon's own trail (a shared
//!   daemon: failed authentication, a global-admin's view over several tenants).
//!
//! Never recorded: bodies, query strings, headers, tokens.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::convert::Infallible;
use std::sync::Arc;

use crate::app::Daemon;
use crate::audit::slot::{AuditSlot, Seen};
use crate::audit::{action_name, Audit, Record};
use crate::auth::layer::{action_of, Actions};
use crate::error::Reason;

/// The response header (and request header) carrying the request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// Actions whose request may carry secret data (secret values, environment, userdata,
/// command lines, file contents): their `invalid_request` messages are not recorded.
const SECRET_BEARING: &[&str] = &[
    "WriteSecret",
    "CreateNode",
    "ExecInNode",
    "ControlBgExecs",
    "CopyToNode",
    "ConnectToNode",
    "CreateToken",
    "ForkCommit",
    "RelaunchNode",
];

/// The layer's state: the daemon and the route table (to name the action of a request that
/// authentication refused before routing).
pub struct AuditState {
    pub daemon: Arc<Daemon>,
    pub actions: Actions,
}

impl<S: Send + Sync> FromRequestParts<S> for AuditSlot {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        // Without the layer (unit tests of handlers), a slot nobody reads.
        Ok(parts
            .extensions
            .get::<AuditSlot>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The client's request id if it is 1 to 128 of `A-Z a-z 0-9 . _ : -`, else a new ULID.
pub fn request_id(h: &HeaderMap) -> String {
    if let Some(v) = h.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        let sane = !v.is_empty()
            && v.len() <= 128
            && v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
        if sane {
            return v.to_string();
        }
    }
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut r = [0u8; 16];
    let _ = getrandom::fill(&mut r);
    ulid::Ulid::from_parts(ms, u128::from_le_bytes(r)).to_string()
}

pub async fn audit(State(st): State<Arc<AuditState>>, mut req: Request, next: Next) -> Response {
    let d = &st.daemon;
    let id = request_id(req.headers());
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let mut seen = slot.seen();
    if seen.route.is_none() {
        // Refused before routing (authentication): find the route the way the router would.
        if let Some((t, params)) = match_route(&st.actions, &path) {
            seen.action = action_of(&st.actions, t, &method).map(|a| format!("{a:?}"));
            seen.route = Some((t.to_string(), params));
        }
    }
    let (trail, tenant) = trail_of(d, &seen);
    trail.record(line(
        &id,
        &seen,
        tenant,
        resp.status(),
        resp.extensions().get::<Reason>(),
    ));
    resp
}

/// Which trail a request's line goes to, and the tenant written in it.
fn trail_of<'a>(d: &'a Daemon, seen: &Seen) -> (&'a Audit, String) {
    let by_index = |i: usize| {
        let t = &d.tenants[i].tenant;
        (&t.audit, t.name.clone())
    };
    if let Some(n) = &seen.tenant_name {
        if let Some(i) = d.tenants.iter().position(|a| a.tenant.name == *n) {
            return by_index(i);
        }
    }
    if let Some(i) = seen.tenant {
        return by_index(i);
    }
    if let Some([i]) = seen.visible.as_deref() {
        return by_index(*i);
    }
    if !d.shared && !d.tenants.is_empty() {
        return by_index(0);
    }
    let tenant = if seen.visible.as_ref().is_some_and(|v| v.len() > 1) {
        "*"
    } else {
        "-"
    };
    match &d.audit {
        Some(a) => (a, tenant.into()),
        // A daemon with no trail of its own (tests): the first tenant's.
        None => (&d.tenants[0].tenant.audit, tenant.into()),
    }
}

fn line(
    id: &str,
    seen: &Seen,
    tenant: String,
    status: StatusCode,
    reason: Option<&Reason>,
) -> Record {
    let (principal, via) = match &seen.principal {
        Some((p, v)) => (p.clone(), (*v).to_string()),
        None => ("anonymous".to_string(), "none".to_string()),
    };
    let s = status.as_u16();
    let outcome = if s < 400 {
        "allowed"
    } else if matches!(s, 401 | 403 | 429) || (s == 404 && seen.no_role) {
        "denied"
    } else {
        "failed"
    };
    let action = seen.action.as_deref();
    let reason = match reason {
        _ if s < 400 => String::new(),
        _ if s == 404 && seen.no_role => {
            format!("not_found: no role in tenant {tenant:?}, answered as a missing object")
        }
        Some(r) => {
            let secretive =
                r.code == "invalid_request" && action.is_some_and(|a| SECRET_BEARING.contains(&a));
            if secretive {
                format!(
                    "{}: (message not recorded: the request may carry secret data)",
                    r.code
                )
            } else {
                let mut m = r.message.clone();
                if m.len() > 512 {
                    let cut = (0..=512)
                        .rev()
                        .find(|i| m.is_char_boundary(*i))
                        .unwrap_or(0);
                    m.truncate(cut);
                    m.push('…');
                }
                format!("{}: {m}", r.code)
            }
        }
        None => format!("status {s}"),
    };
    Record {
        request_id: id.to_string(),
        principal,
        via,
        tenant,
        action: action.map(action_name).unwrap_or_else(|| "-".into()),
        object: seen.object.clone().unwrap_or_else(|| object_of(seen)),
        outcome: outcome.into(),
        reason,
    }
}

/// `node/<name>`, `group/<name>/node/<name>`, `volume/<id>/snapshot/<sid>`, ...: each route
/// parameter named by the path segment before it; `-` for a route without one.
fn object_of(seen: &Seen) -> String {
    let Some((template, params)) = &seen.route else {
        return "-".into();
    };
    let mut parts = Vec::new();
    let mut before = "";
    for seg in template.split('/').filter(|s| !s.is_empty()) {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let Some((_, v)) = params.iter().find(|(k, _)| k == name) else {
                continue;
            };
            let kind = match (before, name) {
                (_, "node") => "node",
                (_, "group") => "group",
                ("volumes", _) => "volume",
                ("snapshots", _) => "snapshot",
                ("commits", _) => "commit",
                ("tokens", _) => "token",
                ("secrets", _) => "secret",
                ("forwards", _) => "forward",
                ("exec", _) => "exec",
                (b, _) => b,
            };
            parts.push(format!("{kind}/{v}"));
        } else {
            before = seg;
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("/")
    }
}

/// The route template `path` matches, with its parameters (literal segments first, as the
/// router prefers them).
type Params = Vec<(String, String)>;

fn match_route(actions: &Actions, path: &str) -> Option<(&'static str, Params)> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut best: Option<(&'static str, Params, usize)> = None;
    for t in actions.keys() {
        let tsegs: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let mut params = Vec::new();
        let mut literals = 0;
        let ok = tsegs.iter().zip(&segs).all(|(t, s)| {
            match t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some(name) => {
                    params.push((name.to_string(), s.to_string()));
                    true
                }
                None => {
                    literals += 1;
                    t == s
                }
            }
        });
        if ok && best.as_ref().is_none_or(|b| literals > b.2) {
            best = Some((t, params, literals));
        }
    }
    best.map(|(t, p, _)| (t, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_name_the_route_parameters() {
        let seen = |t: &str, p: &[(&str, &str)]| Seen {
            route: Some((
                t.into(),
                p.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            )),
            ..Default::default()
        };
        assert_eq!(
            object_of(&seen("/vm/{node}/exec", &[("node", "a-1")])),
            "node/a-1"
        );
        assert_eq!(
            object_of(&seen(
                "/hostgroup/{group}/nodes/{node}",
                &[("group", "a"), ("node", "a-1")]
            )),
            "group/a/node/a-1"
        );
        assert_eq!(
            object_of(&seen(
                "/volumes/{id}/snapshots/{sid}",
                &[("id", "v1"), ("sid", "s1")]
            )),
            "volume/v1/snapshot/s1"
        );
        assert_eq!(object_of(&seen("/nodes", &[])), "-");
        assert_eq!(object_of(&Seen::default()), "-");
    }

    #[test]
    fn routes_match_like_the_router() {
        let actions = crate::http::actions();
        let (t, p) = match_route(&actions, "/vm/n-1/exec").unwrap();
        assert_eq!(t, "/vm/{node}/exec");
        assert_eq!(p, vec![("node".to_string(), "n-1".to_string())]);
        // A literal segment wins over a parameter.
        assert_eq!(
            match_route(&actions, "/vm/commits").unwrap().0,
            "/vm/commits"
        );
        assert!(match_route(&actions, "/nope/x/y/z/w").is_none());
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, "abc-123.x:y_z".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123.x:y_z");
        h.insert(REQUEST_ID, "has space".parse().unwrap());
        let id = request_id(&h);
        assert_eq!(id.len(), 26, "a ULID: {id}");
        assert_eq!(request_id(&HeaderMap::new()).len(), 26);
    }

    #[test]
    fn outcomes_and_reasons() {
        let seen = Seen {
            principal: Some(("uid:0".into(), "socket")),
            action: Some("WriteSecret".into()),
            ..Default::default()
        };
        let ok = line("r", &seen, "t".into(), StatusCode::CREATED, None);
        assert_eq!(
            (ok.outcome.as_str(), ok.action.as_str()),
            ("allowed", "write_secret")
        );
        let bad = Reason {
            code: "invalid_request",
            message: "invalid type: string \"hunter2\"".into(),
        };
        let l = line("r", &seen, "t".into(), StatusCode::BAD_REQUEST, Some(&bad));
        assert_eq!(l.outcome, "failed");
        assert!(!l.reason.contains("hunter2"), "{}", l.reason);
        let forbidden = Reason {
            code: "forbidden",
            message: "no".into(),
        };
        let l = line(
            "r",
            &seen,
            "t".into(),
            StatusCode::FORBIDDEN,
            Some(&forbidden),
        );
        assert_eq!(
            (l.outcome.as_str(), l.reason.as_str()),
            ("denied", "forbidden: no")
        );
        let hidden = Seen {
            no_role: true,
            ..seen.clone()
        };
        let l = line("r", &hidden, "t".into(), StatusCode::NOT_FOUND, None);
        assert_eq!(l.outcome, "denied");
        let l = line("r", &seen, "t".into(), StatusCode::NOT_FOUND, None);
        assert_eq!(l.outcome, "failed");
        let anon = line(
            "r",
            &Seen::default(),
            "-".into(),
            StatusCode::UNAUTHORIZED,
            None,
        );
        assert_eq!(
            (
                anon.principal.as_str(),
                anon.via.as_str(),
                anon.outcome.as_str()
            ),
            ("anonymous", "none", "denied")
        );
    }
}
