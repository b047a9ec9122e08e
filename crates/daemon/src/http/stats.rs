//! `GET /nodes/stats` and `GET /node/{node}/stats`: Slicer's `SlicerNodeStat` list. Both
//! answer a JSON array, the single node's too: Slicer's Go SDK (`GetVMStats`) decodes an
//! array from either route (its OpenAPI spec says an object for the single node; the SDK
//! is the contract). The figures are the tenant's (`tenant/stats.rs`).

use axum::extract::{Path, RawQuery};
use axum::Json;
use bulkhead_api::stats::NodeStat;

use super::body::{Scoped, Visible};
use super::query::Query;
use crate::error::ApiError;

/// The stats of every node of every tenant the caller may see.
pub async fn all(
    Visible(tenants): Visible,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<NodeStat>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let mut out = Vec::new();
    for app in &tenants {
        out.extend(app.tenant.all_stats().await);
    }
    Ok(Json(out))
}

pub async fn one(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<NodeStat>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    Ok(Json(vec![app.tenant.node_stat(&n).await]))
}
