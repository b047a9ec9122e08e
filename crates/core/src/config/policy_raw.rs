//! `config.policy` as written (issue #12, ADR 0024): each key optional, unknown keys refused.
//! Validated into [`super::policy::Policy`]; kept apart from `policy.rs` so that `raw.rs`
//! needs nothing that needs it back.

use serde::{Deserialize, Serialize};

/// `config.policy` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drivers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_node: Option<RawMaxNode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_as_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwards: Option<RawForwards>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RawWebhook>,
    /// #13, attach: whether a node's volumes may be mounted without `noexec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_exec: Option<bool>,
}

/// `config.policy.max_node` as written: `{vcpu: 2, ram: 4G, storage: 10G}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaxNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// `config.policy.forwards` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwards {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_addresses: Option<Vec<String>>,
}

/// `config.policy.webhook` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
}
