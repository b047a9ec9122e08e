//! The pipeline's two layers on the router: `authenticate` (every request, routed or not:
//! the listener's [`Chain`] makes the [`Principal`], kept in the request's extensions) and
//! `authorize` (every routed request: the route table's [`Action`] for its path and method,
//! checked against the tenant). A routed request whose route declares no action for its
//! method is refused: deny by default.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Extensions;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Code, DomainError};
use std::collections::HashMap;
use std::sync::Arc;

use super::authn::{Chain, Peer};
use super::{authorize as decide, Action, Denial, Need, Principal};
use crate::audit::slot::AuditSlot; // #14, A
use crate::error::ApiError;

/// The actions of the route table: by route path, each method (lowercase) with its action.
pub type Actions = HashMap<&'static str, Vec<(&'static str, Action)>>;

/// The action a route declares for a method (`get`, `POST`, ...). No allocation: this runs
/// on every request. A HEAD the route does not declare is its GET's (the router serves HEAD
/// with the GET handler, body dropped: it reads exactly what GET reads), as Slicer's clients
/// and spec expect (`HEAD /healthz`).
pub fn action_of(actions: &Actions, path: &str, method: &str) -> Option<Action> {
    let methods = actions.get(path)?;
    let find = |want: &str| {
        methods
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(want))
            .map(|(_, a)| *a)
    };
    find(method).or_else(|| {
        if method.eq_ignore_ascii_case("head") {
            find("get")
        } else {
            None
        }
    })
}

/// The tenants a pipeline authorizes against: which one holds a node or a host group, and
/// what to put in a request once it may go on (the daemon's [`crate::app::Daemon`]; tests
/// use a stand-in).
pub trait Tenants: Send + Sync + 'static {
    fn count(&self) -> usize;
    fn name(&self, i: usize) -> &str;
    fn of_node(&self, node: &str) -> Option<usize>;
    fn of_group(&self, group: &str) -> Option<usize>;
    /// The request may act in tenant `i`: give its handler the tenant.
    fn scope(&self, i: usize, ext: &mut Extensions);
    /// The request is over the daemon: give its handler the tenants it may see.
    fn visible(&self, tenants: Vec<usize>, ext: &mut Extensions);
    /// A request of `principal` refused by authorization in tenant `i` (metrics; #14: per
    /// principal, with the denial spike event).
    fn denied(&self, i: usize, principal: &str);
    /// A request refused by authentication (metrics).
    fn unauthenticated(&self);
}

/// What the layers need: the listener's authenticators, the tenants, and the action of
/// every (route path, method).
pub struct Pipeline {
    pub chain: Chain,
    pub tenants: Arc<dyn Tenants>,
    pub actions: Actions,
}

/// Whether a request is for a route anyone may read without credentials: every method of it
/// declares an action that needs nothing ([`Need::Public`]: the workload identity issuer's
/// discovery document and keys). Checked before routing, so by the raw path against the route
/// table: only a literal path can match, never a template with parameters (fail closed).
fn public_path(actions: &Actions, path: &str) -> bool {
    actions.get(path).is_some_and(|methods| {
        !methods.is_empty() && methods.iter().all(|(_, a)| a.need() == Some(Need::Public))
    })
}

pub async fn authenticate(
    State(p): State<Arc<Pipeline>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(peer) = req.extensions().get::<Peer>().cloned() else {
        // Every listener sets the peer; a request without one did not come through one.
        return ApiError(DomainError::new(
            Code::Unauthorized,
            "the request came through no listener of this daemon",
        ))
        .into_response();
    };
    match p.chain.authenticate(&peer, req.headers()) {
        Ok(principal) => {
            if let Some(s) = req.extensions().get::<AuditSlot>() {
                s.principal(&principal.id, principal.via.kind()); // #14, A
            }
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(_) if public_path(&p.actions, req.uri().path()) => next.run(req).await,
        Err(e) => {
            p.tenants.unauthenticated();
            ApiError(e).into_response()
        }
    }
}

fn forbidden(message: String) -> DomainError {
    DomainError::new(Code::Forbidden, message)
}

/// Authorizes `action` for `principal` on the request's object: its node, else its host
/// group, else the daemon as a whole. A node or group of a tenant where the principal has no
/// role answers exactly like a missing one.
fn decide_for(
    p: &Pipeline,
    principal: &Principal,
    action: Action,
    node: Option<&str>,
    group: Option<&str>,
    ext: &mut Extensions,
) -> Result<(), DomainError> {
    let t = &p.tenants;
    let object = match (node, group) {
        (Some(n), _) => Some((t.of_node(n), DomainError::no_node(n))),
        (None, Some(g)) => Some((
            t.of_group(g),
            DomainError::not_found(format!(
                "host group {g:?} not found: `GET /hostgroup` lists the groups you may see"
            )),
        )),
        (None, None) => None,
    };
    if let Some((tenant, missing)) = object {
        let Some(i) = tenant else {
            return Err(missing);
        };
        let slot = ext.get::<AuditSlot>().cloned(); // #14, A
        if let Some(s) = &slot {
            s.tenant(i);
        }
        return match decide(principal, action, t.name(i)) {
            Ok(()) => {
                t.scope(i, ext);
                Ok(())
            }
            Err(d) => {
                t.denied(i, &principal.id);
                Err(match d {
                    Denial::NoRole => {
                        if let Some(s) = &slot {
                            s.no_role(); // #14, A: this 404 is a denial
                        }
                        missing
                    }
                    Denial::Forbidden(e) => e,
                })
            }
        };
    }
    let mut visible = Vec::new();
    let mut refusal = None;
    let mut refused_in = Vec::new();
    for i in 0..t.count() {
        match decide(principal, action, t.name(i)) {
            Ok(()) => visible.push(i),
            Err(Denial::Forbidden(e)) => {
                refused_in.push(i);
                refusal.get_or_insert(e);
            }
            Err(Denial::NoRole) => {}
        }
    }
    if visible.is_empty() {
        // Counted only when the request is refused (a union that shows some tenants is not).
        if let (Some(s), [i]) = (ext.get::<AuditSlot>(), refused_in.as_slice()) {
            s.tenant(*i); // #14, A: refused in one tenant: its trail
        }
        for i in refused_in {
            t.denied(i, &principal.id);
        }
        return Err(refusal.unwrap_or_else(|| {
            forbidden(format!(
                "{} has no role in any tenant of this daemon: ask a tenant-admin for one",
                principal.id
            ))
        }));
    }
    if let Some(s) = ext.get::<AuditSlot>() {
        s.visible(&visible); // #14, A
    }
    t.visible(visible, ext);
    Ok(())
}

pub async fn authorize(State(p): State<Arc<Pipeline>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.extensions.get::<MatchedPath>().map(|m| m.as_str());
    let template = path.map(str::to_string); // #14, A
    let action = path.and_then(|path| action_of(&p.actions, path, parts.method.as_str()));
    // Which object the route's template names.
    let (names_node, names_group) = path
        .map(|t| (t.contains("{node}"), t.contains("{group}")))
        .unwrap_or_default();
    let decision = match action {
        None => Err(forbidden(format!(
            "{} {} declares no action, so nobody may call it",
            parts.method,
            path.unwrap_or_default()
        ))),
        Some(a) if a.need() == Some(Need::Public) => Ok(()),
        // Taken out while the request's parts are read and written, then put back.
        Some(action) => match parts.extensions.remove::<Principal>() {
            None => Err(DomainError::new(Code::Unauthorized, "no principal")),
            Some(principal) => {
                // The route's template says which object it names; a route that names one
                // and whose parameter does not decode is refused, never treated as a route
                // over the whole daemon (fail closed).
                let params = RawPathParams::from_request_parts(&mut parts, &())
                    .await
                    .ok();
                let param = |k: &str| {
                    params
                        .as_ref()
                        .and_then(|ps| ps.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_owned()))
                };
                let (node, group) = (param("node"), param("group"));
                // #14, A: the audit line's action and object
                if let (Some(s), Some(t)) = (parts.extensions.get::<AuditSlot>(), &template) {
                    s.action(format!("{action:?}"));
                    let all = params.iter().flat_map(|ps| ps.iter());
                    s.route(
                        t,
                        all.map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    );
                }
                let unreadable = (names_node && node.is_none()) || (names_group && group.is_none());
                let d = if unreadable {
                    Err(DomainError::invalid(
                        "the path's node or host group name is not valid UTF-8: names are DNS labels (a-z, 0-9, -)",
                    ))
                } else {
                    decide_for(
                        &p,
                        &principal,
                        action,
                        node.as_deref(),
                        group.as_deref(),
                        &mut parts.extensions,
                    )
                };
                parts.extensions.insert(principal);
                d
            }
        },
    };
    match decision {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(e) => {
            tracing::info!(code = %e.code, reason = %e.message, "request refused");
            ApiError(e).into_response()
        }
    }
}
