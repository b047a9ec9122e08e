//! Wire types of `GET /quota` (issue #12, ADR 0025): each visible tenant's use against its
//! quotas. A `limit` of `null` is unlimited.

use serde::{Deserialize, Serialize};

/// One quota: what the tenant's nodes use, and what it may use (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaFigure {
    pub used: u64,
    pub limit: Option<u64>,
}

/// One tenant's use against its quotas. Every node of the tenant counts, whatever its state
/// (a stopped or suspended node keeps its claim until it is deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantQuota {
    pub tenant: String,
    pub nodes: QuotaFigure,
    pub vcpu: QuotaFigure,
    pub ram_bytes: QuotaFigure,
    pub storage_bytes: QuotaFigure,
}

/// `GET /quota`: the tenants the caller may see, in config order (one on a one-tenant daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    pub tenants: Vec<TenantQuota>,
}
