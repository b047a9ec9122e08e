//! `config.api.shim` as written (#16, B1): the raw YAML shapes, kept apart from `shim.rs`
//! (which validates them against the tenants) so that `raw.rs` names them without importing
//! the module that imports it back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `config.api.shim` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShim {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<BTreeMap<String, RawShimTarget>>,
}

/// One namespace's mapping as written: a tenant's name, or the tenant with host groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawShimTarget {
    Tenant(String),
    Full(RawShimFull),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShimFull {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<String>,
}
