//! `GET /quota` (issue #12, ADR 0025): each tenant the caller may see, its use against its
//! quotas. A route over the daemon, like `GET /nodes`: the answer is the tenants the
//! authorization layer made visible (one on a one-tenant daemon), in config order.

use axum::extract::RawQuery;
use axum::Json;
use bulkhead_api::quota::QuotaReport;

use super::query::Query;
use super::scope::Visible;
use crate::error::ApiError;

pub async fn quota(
    Visible(tenants): Visible,
    RawQuery(q): RawQuery,
) -> Result<Json<QuotaReport>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(QuotaReport {
        tenants: tenants.iter().map(|a| a.tenant.quota_report()).collect(),
    }))
}
