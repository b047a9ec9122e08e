//! The pipeline's two layers on the router: `authenticate` (every request, routed or not:
//! the listener's [`Chain`] makes the [`Principal`], kept in the request's extensions) and
//! `authorize` (every routed request: the route table's [`Action`] for its path and method,
//! checked against the tenant). A routed request whose route declares no action for its
//! method is refused: deny by default.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Code, DomainError};
use std::collections::HashMap;
use std::sync::Arc;

use super::authn::{Chain, Peer};
use super::{authorize as decide, Action, Principal};
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

/// What the layers need: the listener's authenticators, the tenant the daemon serves, and
/// the action of every (route path, method).
pub struct Pipeline {
    pub chain: Chain,
    pub tenant: String,
    pub actions: Actions,
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
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}

pub async fn authorize(State(p): State<Arc<Pipeline>>, req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    let action = path.and_then(|path| action_of(&p.actions, path, req.method().as_str()));
    let decision = match (req.extensions().get::<Principal>(), action) {
        (Some(principal), Some(action)) => {
            decide(principal, action, &p.tenant).map_err(|d| d.into_error(principal, &p.tenant))
        }
        (None, _) => Err(DomainError::new(Code::Unauthorized, "no principal")),
        (Some(_), None) => Err(DomainError::new(
            Code::Forbidden,
            format!(
                "{} {} declares no action, so nobody may call it",
                req.method(),
                path.unwrap_or_default()
            ),
        )),
    };
    match decision {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::info!(code = %e.code, reason = %e.message, "request refused");
            ApiError(e).into_response()
        }
    }
}
