//! Background execs' bodies (Slicer's `exec_bg.go` shapes): the start's answer, one exec's
//! info, kill, wait-exit and delete.

use serde::{Deserialize, Serialize};

/// Answer of `POST /vm/{node}/exec?background=true` (Slicer's `ExecBackgroundResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BgExecStarted {
    pub exec_id: String,
    pub pid: i32,
    pub started_at: String,
    pub ring_bytes: u64,
}

/// One background exec (`GET /vm/{node}/exec[/{id}]`, Slicer's `ExecBackgroundInfo`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BgExecInfo {
    pub exec_id: String,
    pub pid: i32,
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub uid: u32,
    pub started_at: String,
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Output bytes the command wrote, and those the ring dropped since.
    pub bytes_written: u64,
    pub bytes_dropped: u64,
    /// The id the next log frame will get.
    pub next_id: u64,
    pub ring_bytes: u64,
}

/// Body of `POST /vm/{node}/exec/{id}/kill` (every field optional; an empty body is SIGTERM
/// with a 5 s grace before SIGKILL).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BgKillRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// `false`: send the signal only, never a SIGKILL after the grace (#16: containerd's
    /// Kill, which escalates by itself). Absent or `true`: today's escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate: Option<bool>,
}

/// Answer of `POST /vm/{node}/exec/{id}/kill`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BgKillResponse {
    pub exec_id: String,
    pub pid: i32,
    /// Whether the command still ran when the signal went out (false: nothing was sent).
    pub running: bool,
    /// The signal sent (`"SIGTERM"`), empty when the command had already ended.
    pub signal_sent: String,
}

/// Answer of `GET /vm/{node}/exec/{id}/wait-exit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BgWaitExit {
    pub exec_id: String,
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub timed_out: bool,
}

/// Answer of `DELETE /vm/{node}/exec/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BgDeleted {
    pub exec_id: String,
    pub reaped: bool,
}
