//! The tenant a request acts in, as the authorization layer resolved it: [`Scoped`] for a
//! route with a node or host group, [`Visible`] for a route over the whole daemon. The layer
//! puts them into the request ([`Tenants`] for the [`Daemon`]); handlers take them as
//! extractors and never pick a tenant themselves.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Extensions;
use bulkhead_core::DomainError;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::app::{App, Daemon};
use crate::auth::layer::Tenants;
use crate::error::ApiError;

/// The tenant of the request's node or host group, which the caller may act in (put in the
/// request by the authorization layer; a handler never picks a tenant itself).
#[derive(Clone)]
pub struct Scoped(pub Arc<App>);

/// For a route over the whole daemon (`GET /nodes`, `/hostgroup`, `/metrics`, ...): the
/// tenants whose part the caller may see, in config order.
#[derive(Clone)]
pub struct Visible(pub Vec<Arc<App>>);

fn missing(what: &str) -> ApiError {
    // A route table entry whose handler and object disagree: a bug of ours, not the caller's.
    ApiError(DomainError::internal(format!(
        "this route has no {what}: the route table and its handler disagree"
    )))
}

impl<S: Send + Sync> FromRequestParts<S> for Scoped {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Scoped>()
            .cloned()
            .ok_or_else(|| missing("tenant"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visible {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Visible>()
            .cloned()
            .ok_or_else(|| missing("tenant list"))
    }
}

impl Tenants for Daemon {
    fn count(&self) -> usize {
        self.tenants.len()
    }
    fn name(&self, i: usize) -> &str {
        &self.tenants[i].tenant.name
    }
    fn of_node(&self, node: &str) -> Option<usize> {
        let mut holders =
            (0..self.tenants.len()).filter(|i| self.tenants[*i].tenant.has_node(node));
        let first = holders.next()?;
        if holders.next().is_some() {
            // Start refuses stores where this could happen (`Daemon::check_node_names`); if it
            // ever does, the name belongs to nobody rather than to the first tenant.
            tracing::error!(node, "a node name is held by two tenants: refusing it");
            return None;
        }
        Some(first)
    }
    fn of_group(&self, group: &str) -> Option<usize> {
        self.tenants
            .iter()
            .position(|a| a.tenant.cfg.group(group).is_some())
    }
    fn scope(&self, i: usize, ext: &mut Extensions) {
        ext.insert(Scoped(self.tenants[i].clone()));
    }
    fn visible(&self, tenants: Vec<usize>, ext: &mut Extensions) {
        ext.insert(Visible(
            tenants
                .into_iter()
                .map(|i| self.tenants[i].clone())
                .collect(),
        ));
    }
    fn denied(&self, i: usize, principal: &str) {
        let t = &self.tenants[i].tenant;
        t.counters.denied.fetch_add(1, Ordering::Relaxed);
        t.events.denied(principal); // #14, part B: per principal, spikes
    }
    fn unauthenticated(&self) {
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
    }
}
