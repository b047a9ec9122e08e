//! `GET /nodes/stats` and `GET /node/{node}/stats`: Slicer's `SlicerNodeStat` list. Both
//! answer a JSON array, the single node's too: Slicer's Go SDK (`GetVMStats`) decodes an
//! array from either route (its OpenAPI spec says an object for the single node; the SDK
//! is the contract). The figures are the tenant's (`tenant/stats.rs`).

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use bulkhead_api::stats::NodeStat;

use super::body::AppState;
use super::query::Query;
use crate::error::ApiError;

pub async fn all(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<NodeStat>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(app.tenant.all_stats().await))
}

pub async fn one(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<NodeStat>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    Ok(Json(vec![app.tenant.node_stat(&n).await]))
}
