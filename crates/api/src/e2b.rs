//! Wire types of E2B's control plane (#15, A; `docs/api/e2b-openapi.yaml`), in E2B's field
//! names (`templateID`, `envVars`, `allow_internet_access`, ...), as the official SDKs send
//! and read them.
//!
//! Request bodies ignore keys they do not know: E2B's SDKs add fields release by release, and
//! a key bulkhead does not know asks for nothing it would then pretend to do. Known options
//! bulkhead cannot honour are refused by the daemon when they ask for something
//! ([`NewSandbox::unsupported`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `POST /sandboxes`, `POST /v2/sandboxes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds until the sandbox ends (E2B's default: 15 on `/sandboxes`, 300 on `/v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, rename = "autoPause", skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
    /// Accepted and ignored: a paused node keeps its memory either way.
    #[serde(
        default,
        rename = "autoPauseMemory",
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_pause_memory: Option<bool>,
    #[serde(
        default,
        rename = "autoResume",
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_resume: Option<AutoResume>,
    /// Ignored (E2B: "all communication is secured"): the access token is always required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "envVars", skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<Value>,
    #[serde(
        default,
        rename = "volumeMounts",
        skip_serializing_if = "Option::is_none"
    )]
    pub volume_mounts: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AutoResume {
    #[serde(default)]
    pub enabled: bool,
}

/// E2B's `network` options. `allowOut`/`denyOut` become the node's network override
/// (IPv4 CIDRs or addresses only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkConfig {
    #[serde(default, rename = "allowOut", skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, rename = "denyOut", skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Accepted: sandbox URLs need the access token here anyway.
    #[serde(
        default,
        rename = "allowPublicTraffic",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_public_traffic: Option<bool>,
    #[serde(
        default,
        rename = "dnsServers",
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_servers: Option<Vec<String>>,
    #[serde(
        default,
        rename = "egressProxy",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_proxy: Option<Value>,
    #[serde(
        default,
        rename = "maskRequestHost",
        skip_serializing_if = "Option::is_none"
    )]
    pub mask_request_host: Option<String>,
    #[serde(
        default,
        rename = "httpsPorts",
        skip_serializing_if = "Option::is_none"
    )]
    pub https_ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Value>,
}

fn asks(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(_) => true,
    }
}

impl NewSandbox {
    /// Options given a value that asks for something bulkhead does not do, by their E2B
    /// names (the daemon answers 400 naming them).
    pub fn unsupported(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if asks(&self.mcp) {
            v.push("mcp");
        }
        if asks(&self.iam) {
            v.push("iam");
        }
        if self.volume_mounts.as_ref().is_some_and(|m| !m.is_empty()) {
            v.push("volumeMounts");
        }
        if self.auto_resume.as_ref().is_some_and(|a| a.enabled) {
            v.push("autoResume");
        }
        if let Some(n) = &self.network {
            if asks(&n.egress_proxy) {
                v.push("network.egressProxy");
            }
            if asks(&n.rules) {
                v.push("network.rules");
            }
            if n.mask_request_host
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            {
                v.push("network.maskRequestHost");
            }
            if n.https_ports.as_ref().is_some_and(|p| !p.is_empty()) {
                v.push("network.httpsPorts");
            }
        }
        v
    }
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimeoutRequest {
    pub timeout: i64,
}

/// `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
}

/// `POST /sandboxes/{id}/connect`, `/v2/…/connect`, `/resume`: the new timeout (seconds;
/// default 300 for connect, 15 for resume).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Accepted: a paused node resumes with its memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
    /// `/resume`'s older name for `autoPause` (accepted and ignored).
    #[serde(default, rename = "autoPause", skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
}

/// A sandbox as create, connect and resume answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Omitted when the caller may not run commands in the sandbox (it would grant that).
    #[serde(
        default,
        rename = "envdAccessToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_access_token: Option<String>,
    #[serde(default, rename = "trafficAccessToken")]
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

/// A sandbox as `GET /sandboxes`, `GET /v2/sandboxes` list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// RFC 3339.
    #[serde(rename = "startedAt")]
    pub started_at: String,
    #[serde(rename = "endAt")]
    pub end_at: String,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    /// `running` or `paused`.
    pub state: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    pub metadata: BTreeMap<String, String>,
}

/// `GET /sandboxes/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    #[serde(
        default,
        rename = "envdAccessToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_access_token: Option<String>,
    #[serde(rename = "allowInternetAccess")]
    pub allow_internet_access: Option<bool>,
    pub domain: Option<String>,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(rename = "autoResume")]
    pub auto_resume: bool,
    /// `kill` or `pause`.
    #[serde(rename = "onTimeout")]
    pub on_timeout: String,
}

/// One point of `GET /sandboxes/{id}/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMetric {
    pub timestamp: String,
    #[serde(rename = "timestampUnix")]
    pub timestamp_unix: u64,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "cpuUsedPct")]
    pub cpu_used_pct: f64,
    #[serde(rename = "memUsed")]
    pub mem_used: u64,
    #[serde(rename = "memTotal")]
    pub mem_total: u64,
    #[serde(rename = "memCache")]
    pub mem_cache: u64,
    #[serde(rename = "diskUsed")]
    pub disk_used: u64,
    #[serde(rename = "diskTotal")]
    pub disk_total: u64,
}

/// `GET /sandboxes/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxLogs {
    pub logs: Vec<SandboxLog>,
    #[serde(rename = "logEntries")]
    pub log_entries: Vec<SandboxLogEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxLog {
    pub timestamp: String,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxLogEntry {
    pub timestamp: String,
    pub message: String,
    /// `info`.
    pub level: String,
    pub fields: BTreeMap<String, String>,
}

/// `GET /v2/sandboxes/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxLogsV2 {
    pub logs: Vec<SandboxLogEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_create_body_parses_and_unsupported_options_are_named() {
        let b: NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","timeout":300,"autoPause":false,"autoPauseMemory":true,
                "metadata":{"a":"1"},"envVars":{"K":"v"},"allow_internet_access":false,
                "secure":true,"someFutureField":1}"#,
        )
        .unwrap();
        assert_eq!(b.template_id, "base");
        assert_eq!(b.allow_internet_access, Some(false));
        assert!(b.unsupported().is_empty());
        let b: NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","mcp":{"x":1},"autoResume":{"enabled":true},"network":{"rules":{"a":{}}}}"#,
        )
        .unwrap();
        assert_eq!(b.unsupported(), vec!["mcp", "autoResume", "network.rules"]);
        let b: NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","mcp":null,"autoResume":{"enabled":false}}"#,
        )
        .unwrap();
        assert!(b.unsupported().is_empty());
    }
}
