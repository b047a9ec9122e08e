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
    /// Every tenant the caller may see (a shared daemon may serve several).
    #[serde(default)]
    pub tenants: Vec<String>,
    pub hypervisor: String,
    pub cgroup: String,
    /// microVM tenants: `kvm` or `tcg`, as the daemon's probe decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// What protects tenant data at rest on this host (#13): `{fscrypt, dm_crypt, missing}`,
    /// from the daemon's probe at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageProtection>,
    /// The SHA-256 of the daemon's binaries and config at start, and whether each changed on
    /// disk since (#14, part B; re-checked every `detection.integrity_interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Vec<IntegrityFile>>,
}

/// One file of `GET /info`'s `integrity` (#14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityFile {
    /// `bulkhead`, `bulkhead-supervisor`, `bulkhead-agent` or `config`.
    pub file: String,
    /// Its path on the host (global-admin only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its SHA-256 at start, lowercase hex.
    pub sha256: String,
    /// It differs on disk from `sha256` (as last checked).
    pub changed: bool,
    /// What it is now, when it changed (a digest, or `unreadable: <why>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_now: Option<String>,
}

/// `GET /info`'s `storage`: what this host's kernel can give (#13, `bulkhead_storage::probe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageProtection {
    /// Volumes and persistent layers can be encrypted with fscrypt (ext4 images).
    pub fscrypt: bool,
    /// The kernel has dm-crypt.
    pub dm_crypt: bool,
    /// One sentence per missing protection, saying what it means and what to do.
    #[serde(default)]
    pub missing: Vec<String>,
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
    /// GPUs to pass through (Slicer): bulkhead's host groups have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    /// An alternative disk image (Slicer): nodes boot their host group's `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_image: Option<String>,
    /// A GitHub user whose SSH keys Slicer imports: bulkhead nodes run no SSH server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_user: Option<String>,
    /// SSH keys (Slicer): bulkhead nodes run no SSH server (use exec, shell and cp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_keys: Option<Vec<String>>,
    /// Slicer's delete protection: not a bulkhead feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// PCI passthrough (Slicer): never, on a shared host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_devices: Option<Vec<String>>,
    /// The tenant's volumes to mount in the node (#13, volumes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeAttach>,
    /// #13 commit and fork: a commit id of the tenant's (`GET /vm/commits`) to start from, or
    /// the host group's own image name (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// #15 (B, node TTL): the node's lifetime from its create (whole seconds, or a duration
    /// string such as `"30m"` or `"1h30m"`); when it passes the daemon deletes the node.
    /// Not part of the conflict rule's compared spec (ADR 0037).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<crate::ttl::NodeTimeout>,
}

impl CreateNodeRequest {
    /// Slicer's create fields bulkhead cannot honour that were given a value asking for
    /// something. A zero, false or empty value asks for nothing and is accepted (Slicer's SDKs
    /// may send them); anything else is refused, so a caller never believes it got what it
    /// asked for. `ssh_keys` and `import_user` are not among them: nodes run no SSH server, so
    /// they are accepted and ignored whatever their value.
    pub fn slicer_only_set(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.gpu_count.unwrap_or(0) != 0 {
            out.push("gpu_count");
        }
        if self.disk_image.as_deref().is_some_and(|s| !s.is_empty()) {
            out.push("disk_image");
        }
        if self.protected.unwrap_or(false) {
            out.push("protected");
        }
        if self.pci_devices.as_ref().is_some_and(|k| !k.is_empty()) {
            out.push("pci_devices");
        }
        out
    }
}

/// One entry of a node create's `volumes` (#13): which of the tenant's volumes
/// (`crate::volumes`), where in the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeAttach {
    pub id: String,
    /// An absolute path in the node (`/data`).
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
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
    /// #15 (B, node TTL): when the node's timeout passes (RFC 3339, UTC), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Response of `DELETE /hostgroup/{group}/nodes/{node}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub message: String,
    /// `"true"` or `"false"`: a string, as Slicer's SDKs decode it.
    pub disk_removed: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One NDJSON frame of a streamed exec, in the shape Slicer's SDKs decode
/// (`SlicerExecWriteResult`).
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
    /// How the command ended. `exit_code` is always present: the command's own code, or,
    /// when a signal killed it, 128 + the signal's number (as a shell's `$?`), with `signal`
    /// naming it (`"SIGKILL"`). A command that could not be found is 127, one that could not
    /// be executed 126, as in a shell.
    Exit {
        exit_code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
        ended_at: String,
    },
    Error {
        error: String,
        code: String,
    },
    /// Background-exec logs only: frames between the reader's cursor and the oldest frame
    /// still in the ring were dropped (the ring is bounded).
    Gap {
        dropped_frames: u64,
        dropped_bytes: u64,
        message: String,
    },
}

/// One frame of a background exec's log (`GET /vm/{node}/exec/{id}/logs`): an [`ExecFrame`]
/// with its position in the exec's log (`id`, from 1; `from_id` resumes there).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogFrame {
    pub id: u64,
    #[serde(flatten)]
    pub frame: ExecFrame,
}

/// Body of `POST /vm/{node}/exec?buffered=true` (Slicer's `ExecResult`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BufferedExec {
    pub stdout: String,
    pub stderr: String,
    /// `base64` when the exec asked for `stdio=base64` (stdout and stderr are then base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// As in [`ExecFrame::Exit`].
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The command's pid inside the node (absent when it never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// Response of `POST /vm/{node}/cp`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyInResult {
    pub path: String,
    pub bytes: u64,
}

/// `GET /vm/{node}/health`: Slicer's fields (durations in nanoseconds, as Go's
/// `time.Duration` encodes) and bulkhead's own (`agent`, `uptime_ms`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub hostname: String,
    pub agent: String,
    pub uptime_ms: u64,
    /// The agent's uptime in nanoseconds.
    #[serde(default)]
    pub agent_uptime: u64,
    /// The agent's build version; empty from an agent too old to say.
    #[serde(default)]
    pub agent_version: String,
    /// The node's uptime in nanoseconds: the guest's for a microVM, the node's init's for a
    /// jail (its processes share the host's kernel, whose uptime is not the node's).
    #[serde(default)]
    pub system_uptime: u64,
    /// Whether the node's userdata has run to its end (true when it has none).
    #[serde(default)]
    pub userdata_ran: bool,
    /// The userdata's exit code once it ended; absent while it runs or without userdata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userdata_exit_code: Option<i32>,
    /// The node's address; absent for a node without a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `GET /vm/{node}/logs`: the node's console, as Slicer's SDKs decode it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeLogs {
    pub hostname: String,
    /// Lines in `content`.
    pub lines: u64,
    pub content: String,
}

/// `GET|PATCH /vm/{node}/tags`: a node's tags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeTags {
    pub hostname: String,
    pub tags: Vec<String>,
}

/// Body of `PATCH /vm/{node}/tags`: add and remove, or replace (not both).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagUpdate {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Vec<String>>,
}

/// `GET /vm/{node}`: a node with its configuration and effective network policy, in the
/// shape of Slicer's `SlicerVMDescription`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDescription {
    #[serde(flatten)]
    pub node: Node,
    /// bulkhead's own state word (`Suspended` shows as `status: Stopped`).
    pub state: String,
    pub driver: String,
    pub storage: String,
    pub image: String,
    pub network: NodeNetworkDescription,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeNetworkDescription {
    /// `isolated`, `bridge` or `none`.
    pub mode: String,
    /// `host_group`, or `override` when the create gave a `network` policy.
    pub policy_source: String,
    pub host_group: NetworkPolicy,
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_policy: Option<NetworkPolicy>,
    pub effective: NetworkPolicy,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkPolicy {
    pub allow: Vec<String>,
    pub drop: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What Slicer's Go SDK marshals for a create (every field set to what it sends).
    #[test]
    fn a_create_from_slicers_sdks_parses_and_only_real_asks_are_flagged() {
        let r: CreateNodeRequest = serde_json::from_str(
            r#"{"ram_bytes":1,"cpus":1,"gpu_count":0,"persistent":false,"disk_image":"",
                "import_user":"alice","ssh_keys":["k"],"userdata":"x","ip":"10.0.0.2",
                "tags":["a"],"secrets":[],"network":{"allow":[],"drop":[]},"protected":false,
                "pci_devices":[]}"#,
        )
        .unwrap();
        assert!(r.slicer_only_set().is_empty(), "{:?}", r.slicer_only_set());
        let r: CreateNodeRequest =
            serde_json::from_str(r#"{"gpu_count":2,"disk_image":"u","protected":true}"#).unwrap();
        assert_eq!(
            r.slicer_only_set(),
            vec!["gpu_count", "disk_image", "protected"]
        );
        assert!(serde_json::from_str::<CreateNodeRequest>(r#"{"privileged":true}"#).is_err());
    }

    #[test]
    fn tag_updates_are_strict() {
        let u: TagUpdate = serde_json::from_str(r#"{"replace":[]}"#).unwrap();
        assert_eq!(u.replace, Some(vec![]));
        assert!(serde_json::from_str::<TagUpdate>(r#"{"set":["a"]}"#).is_err());
    }

    #[test]
    fn description_flattens_the_node_and_names_override() {
        let d = NodeDescription {
            node: Node {
                hostname: "g-1".into(),
                hostgroup: "g".into(),
                ip: String::new(),
                ram_bytes: 1,
                cpus: 1,
                created_at: "t".into(),
                tags: vec![],
                arch: "x86_64".into(),
                status: NodeStatus::Stopped,
                persistent: false,
                expires_at: None,
            },
            state: "Suspended".into(),
            driver: "qemu".into(),
            storage: "image".into(),
            image: "minimal".into(),
            network: NodeNetworkDescription {
                mode: "isolated".into(),
                policy_source: "override".into(),
                host_group: NetworkPolicy::default(),
                override_policy: Some(NetworkPolicy::default()),
                effective: NetworkPolicy::default(),
            },
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["hostname"], "g-1");
        assert_eq!(v["status"], "Stopped");
        assert!(v["network"]["override"]["allow"].is_array(), "{v}");
    }
}
