//! The pipeline's admission step (issue #12, rate limits; ADR 0026): right after
//! authorization, for a request whose tenant is known ([`Scoped`], or [`Visible`] with one
//! tenant), its tenant's requests in flight (503 `busy` beyond
//! `config.rate_limits.max_in_flight`; long-lived requests are not counted, see
//! [`crate::rate::LONG_LIVED`], but are its sessions: 503 `busy` beyond
//! `config.rate_limits.max_sessions`, held until the response body ends or, for a WebSocket,
//! until the upgraded connection closes, see [`crate::rate::session`]) and the token bucket of its action (429 `rate_limited` with
//! Retry-After). Handlers are untouched: a refused request never reaches them.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

use super::scope::{Scoped, Visible};
use crate::auth::layer::{action_of, Pipeline};
use crate::error::ApiError;
use crate::rate::session::{guard_body, SessionGuard};
use crate::rate::{bucket_of, long_lived};

pub async fn admit(State(p): State<Arc<Pipeline>>, req: Request, next: Next) -> Response {
    let ext = req.extensions();
    let app = match (ext.get::<Scoped>(), ext.get::<Visible>()) {
        (Some(Scoped(app)), _) => app.clone(),
        (None, Some(Visible(v))) if v.len() == 1 => v[0].clone(),
        // A public route, or one over several tenants: no one tenant to count it against.
        _ => return next.run(req).await,
    };
    let path = ext.get::<MatchedPath>().map(|m| m.as_str()).unwrap_or("");
    let method = req.method().as_str();
    let action = action_of(&p.actions, path, method);
    let limits = &app.tenant.limits;
    let (in_flight, session) = if long_lived(path, method) {
        match limits.open_session() {
            Ok(s) => (None, Some(s)),
            Err(e) => {
                tracing::info!(tenant = %app.tenant.name, reason = %e.message, "session refused");
                return ApiError(e).into_response();
            }
        }
    } else {
        match limits.enter() {
            Ok(g) => (Some(g), None),
            Err(e) => return ApiError(e).into_response(),
        }
    };
    if let Some(kind) = action.and_then(bucket_of) {
        if let Err(e) = limits.spend(kind, Instant::now()) {
            tracing::info!(tenant = %app.tenant.name, reason = %e.message, "request rate limited");
            return ApiError(e).into_response();
        }
    }
    let mut req = req;
    if let Some(s) = &session {
        req.extensions_mut().insert(SessionGuard(s.clone()));
    }
    let r = next.run(req).await;
    drop(in_flight);
    match session {
        // A streamed body (an exec's output, a followed log, a watch) holds the session until
        // it ends; an upgrade's handler took its own clone into the connection.
        Some(s) => r.map(|b| guard_body(b, s)),
        None => r,
    }
}

#[cfg(test)]
mod tests {
    use crate::rate::{long_lived, LONG_LIVED};

    #[test]
    fn long_lived_routes_are_routes_of_the_table() {
        let mut table = super::super::actions();
        // #15 C: the E2B listener's in-sandbox routes are long-lived there
        for r in crate::e2b::envd::table() {
            table.insert(r.path, r.methods.to_vec());
        }
        for (path, method) in LONG_LIVED {
            let methods = table
                .get(path)
                .unwrap_or_else(|| panic!("{path} is no route"));
            assert!(
                methods.iter().any(|(m, _)| m.eq_ignore_ascii_case(method)),
                "{method} {path} is no route"
            );
        }
        assert!(long_lived("/vm/{node}/exec", "post"));
        assert!(!long_lived("/vm/{node}/exec", "GET"));
    }
}
