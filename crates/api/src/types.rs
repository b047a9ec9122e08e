//! Request and response bodies. Unknown fields in requests are rejected (`deny_unknown_fields`)
//! so that a typo in a client never silently changes what a node gets.

use serde::{Deserialize, Serialize};

/// Error body of every failed request: a message for people and a stable code for programs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub git_commit: String,
    pub tenant: String,
    pub hypervisor: String,
    pub cgroup: String,
    /// microVM tenants: `kvm` or `tcg`, as the daemon's probe decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
}

/// One entry of `GET /hostgroup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostGroupInfo {
    pub name: String,
    pub count: u64,
    pub ram_bytes: u64,
    pub cpus: u32,
    pub arch: String,
    pub storage_size_bytes: u64,
    pub network_mode: String,
}

/// Body of `POST /hostgroup/{group}/nodes`. Every field is optional: the host group supplies
/// the defaults, and a node may ask for less than its group but never for more.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNodeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userdata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NodeNetworkRequest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeNetworkRequest {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

/// Response of a successful create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedNode {
    pub hostname: String,
    pub hostgroup: String,
    pub ip: String,
    pub created_at: String,
    pub arch: String,
}

/// Status of a node as Slicer names it, plus bulkhead's transitional states.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum NodeStatus {
    Creating,
    Running,
    Paused,
    Stopped,
    Deleting,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Creating => "Creating",
            NodeStatus::Running => "Running",
            NodeStatus::Paused => "Paused",
            NodeStatus::Stopped => "Stopped",
            NodeStatus::Deleting => "Deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Creating" => NodeStatus::Creating,
            "Running" => NodeStatus::Running,
            "Paused" => NodeStatus::Paused,
            "Stopped" => NodeStatus::Stopped,
            "Deleting" => NodeStatus::Deleting,
            _ => return None,
        })
    }
}

/// One node as `GET /nodes` and `GET /hostgroup/{group}/nodes` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub hostname: String,
    pub hostgroup: String,
    pub ip: String,
    pub ram_bytes: u64,
    pub cpus: u32,
    pub created_at: String,
    pub tags: Vec<String>,
    pub arch: String,
    pub status: NodeStatus,
    pub persistent: bool,
}

/// Response of `DELETE /hostgroup/{group}/nodes/{node}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub message: String,
    pub disk_removed: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One NDJSON frame of a streamed exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExecFrame {
    Started {
        pid: i32,
        started_at: String,
    },
    /// `encoding` is `base64` when the exec asked for `stdio=base64`; `data` is then the
    /// chunk's bytes in standard base64. Absent for text.
    Stdout {
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    Stderr {
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
        ended_at: String,
    },
    Error {
        error: String,
        code: String,
    },
}

/// Body of `POST /vm/{node}/exec?buffered=true`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BufferedExec {
    pub stdout: String,
    pub stderr: String,
    /// `base64` when the exec asked for `stdio=base64` (stdout and stderr are then base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

/// Response of `POST /vm/{node}/cp`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyInResult {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub hostname: String,
    pub agent: String,
    pub uptime_ms: u64,
}

/// Body of `POST /vm/{node}/forwards`: open a host port to one port of the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRequest {
    /// Port on the host; 0 picks a free one.
    pub host_port: u16,
    pub node_port: u16,
    /// Host address to listen on; default 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Accept a PROXY protocol v2 header, from `trusted_proxies` only.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// CIDRs of upstreams (load balancers) whose PROXY v2 header is honoured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

/// An open port forward.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    pub node: String,
    /// The address the host listens on, e.g. `127.0.0.1:18080`.
    pub listen: String,
    pub node_port: u16,
    pub proxy_protocol: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Connections accepted so far.
    pub connections: u64,
    /// Peer of the most recent connection (what authorization may use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_peer: Option<String>,
    /// Original client of the most recent connection, from a trusted PROXY v2 header.
    /// Information only: never used to authorize anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_client: Option<String>,
}
