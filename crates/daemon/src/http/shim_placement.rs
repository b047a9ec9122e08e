//! #16, B1: `GET /shim/placement?namespace=N&driver=D`: which tenant and host group a pod of
//! namespace `N` (Kubernetes', else containerd's) goes to, by `config.api.shim.namespaces`.
//! Served on the shim socket (which carries the mapping); the caller must be allowed to create
//! nodes in the tenant it names.
//!
//! The host group: the one the mapping names for the driver, else the tenant's first host
//! group of that driver, else a 400 naming the key to set.

use axum::extract::{Extension, RawQuery};
use axum::Json;
use bulkhead_api::containers::Placement;
use bulkhead_core::config::shim::{ANY_NAMESPACE, DRIVERS};
use bulkhead_core::{Code, DomainError};

use super::query::Query;
use super::scope::Visible;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::shim::Mapping;

pub async fn placement(
    Visible(apps): Visible,
    Extension(who): Extension<Principal>,
    mapping: Option<Extension<Mapping>>,
    RawQuery(q): RawQuery,
) -> Result<Json<Placement>, ApiError> {
    let q = Query::parse(q.as_deref(), &["namespace", "driver"])?;
    let namespace = q
        .one("namespace")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            DomainError::invalid("query parameter namespace is required, e.g. ?namespace=default")
        })?;
    let driver = q.one("driver")?.unwrap_or_else(|| "jail".into());
    if !DRIVERS.contains(&driver.as_str()) {
        return Err(DomainError::invalid(format!(
            "driver {driver:?} is not known: use {}",
            DRIVERS.join(" or ")
        ))
        .into());
    }
    let Some(Extension(Mapping(shim))) = mapping else {
        return Err(DomainError::not_found(
            "placement is answered on the shim socket (config.api.shim.socket) only",
        )
        .into());
    };
    let Some(target) = shim.target(&namespace) else {
        return Err(DomainError::new(
            Code::PolicyDenied,
            format!(
                "kubernetes namespace {namespace} maps to no tenant: add it to config.api.shim.namespaces"
            ),
        )
        .into());
    };
    let Some(app) = apps.iter().find(|a| a.tenant.name == target.tenant) else {
        return Err(DomainError::new(
            Code::Forbidden,
            format!(
                "{} may not create nodes in tenant {:?}, where namespace {namespace} maps",
                who.id, target.tenant
            ),
        )
        .into());
    };
    let groups = &app.tenant.cfg.groups;
    let hostgroup = match target.group(&driver) {
        Some(g) => g.to_string(),
        None => groups
            .iter()
            .find(|g| g.hypervisor == driver)
            .map(|g| g.name.clone())
            .ok_or_else(|| {
                let key = if shim.namespaces.contains_key(&namespace) {
                    namespace.clone()
                } else {
                    ANY_NAMESPACE.to_string()
                };
                DomainError::new(
                    Code::Unsupported,
                    format!(
                        "tenant {:?} has no {driver} host group for namespace {namespace}: add one to the tenant's host_groups, or name one in config.api.shim.namespaces.{key}.{driver}",
                        target.tenant
                    ),
                )
            })?,
    };
    Ok(Json(Placement {
        tenant: target.tenant.clone(),
        hostgroup,
    }))
}
