//! `config.events` and `config.detection` as written (#14, part B); validated in `events.rs`.
//! Apart from it so that `raw.rs` can hold them without importing what imports it.

use serde::{Deserialize, Serialize};

/// `config.events` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RawEventWebhook>,
}

/// `config.events.webhook` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventWebhook {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<usize>,
}

/// `config.detection` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial_spike: Option<RawDenialSpike>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_interval: Option<String>,
}

/// `config.detection.denial_spike` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDenialSpike {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}
