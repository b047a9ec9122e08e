//! A node's lifecycle as a state machine. The allowed transitions live here and nowhere else:
//! the daemon asks a state whether an operation is allowed and gets the next state or the
//! refusal (a [`DomainError`] with the code a client sees).
//!
//! ```text
//!   Creating ──started──▶ Running ◀──resume── Paused
//!    ▲  │                  │  └────pause──────▶ │
//!    │  │                  │ init exited,       │ init exited,
//!    │  │                  │ shutdown           │ shutdown
//!    │  │                  ▼                    ▼
//!    │  │                Stopped ◀──────────────┘
//!    │  │                  │
//!    │  └─(failed: removed)└──delete──▶ Deleting ──▶ (removed)
//!    │
//!    ├── relaunch ── Stopped, Suspended     (a start again, same name, address and tags)
//!    └── restore ─── Suspended ◀── suspend ── Running, Paused   (memory to disk and back)
//! ```
//! Running and Paused nodes can be deleted too; a Creating node cannot (its create is still
//! under way and removes the node itself if it fails), nor a Deleting one (one delete wins).
//! A relaunch or restore that fails leaves the node Stopped (its record stays; ADR 0018).
//! Suspended is bulkhead's word; on Slicer's wire it is `Stopped` (nothing of the node runs).

use crate::error::{Code, DomainError};

/// Where a node is in its life. Stored as its [`NodeState::as_str`] form; shown on the wire
/// as `bulkhead_api::NodeStatus` (same words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    Creating,
    Running,
    Paused,
    Stopped,
    Deleting,
    /// The node's memory is on disk and nothing of it runs (microVMs; ADR 0018).
    Suspended,
}

impl NodeState {
    pub const ALL: [NodeState; 6] = [
        NodeState::Creating,
        NodeState::Running,
        NodeState::Paused,
        NodeState::Stopped,
        NodeState::Deleting,
        NodeState::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Creating => "Creating",
            NodeState::Running => "Running",
            NodeState::Paused => "Paused",
            NodeState::Stopped => "Stopped",
            NodeState::Deleting => "Deleting",
            NodeState::Suspended => "Suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        NodeState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the node's processes are meant to be there: a restarted daemon re-adopts such a
    /// node if its supervisor still runs, and removes any other.
    pub fn is_live(self) -> bool {
        matches!(self, NodeState::Running | NodeState::Paused)
    }

    pub fn can_pause(self) -> bool {
        self == NodeState::Running
    }
    pub fn can_resume(self) -> bool {
        self == NodeState::Paused
    }
    /// Whether exec and copy may reach the node's agent.
    pub fn can_reach_agent(self) -> bool {
        self == NodeState::Running
    }
    pub fn can_delete(self) -> bool {
        !matches!(self, NodeState::Creating | NodeState::Deleting)
    }

    /// Creating → Running, once the node's supervisor reported it started.
    pub fn started(self, node: &str) -> Result<NodeState, DomainError> {
        match self {
            NodeState::Creating => Ok(NodeState::Running),
            s => Err(DomainError::internal(format!(
                "node {node:?} is {}, not Creating: it cannot start again",
                s.as_str()
            ))),
        }
    }

    /// Running → Paused.
    pub fn pause(self, node: &str) -> Result<NodeState, DomainError> {
        if self.can_pause() {
            return Ok(NodeState::Paused);
        }
        Err(self.not_in(node, NodeState::Running, "paused"))
    }

    /// Paused → Running.
    pub fn resume(self, node: &str) -> Result<NodeState, DomainError> {
        if self.can_resume() {
            return Ok(NodeState::Running);
        }
        Err(self.not_in(node, NodeState::Paused, "resumed"))
    }

    /// Running, Paused or Stopped → Deleting.
    pub fn delete(self, node: &str) -> Result<NodeState, DomainError> {
        match self {
            NodeState::Creating => Err(DomainError::new(
                Code::NodeNotReady,
                format!("node {node:?} is still being created: delete it once the create returns"),
            )),
            NodeState::Deleting => Err(DomainError::new(
                Code::NodeDeleting,
                format!("node {node:?} is already being deleted"),
            )),
            _ => Ok(NodeState::Deleting),
        }
    }

    /// Running or Paused: a shutdown may stop it (it becomes Stopped when its init exits).
    pub fn shutdown(self, node: &str) -> Result<NodeState, DomainError> {
        match self {
            NodeState::Running | NodeState::Paused => Ok(NodeState::Stopped),
            s => Err(DomainError::new(
                Code::NodeNotRunning,
                format!(
                    "node {node:?} is {}: only a Running or Paused node can be shut down",
                    s.as_str()
                ),
            )),
        }
    }

    /// Stopped or Suspended → Creating: the node starts again (a relaunch).
    pub fn relaunch(self, node: &str) -> Result<NodeState, DomainError> {
        match self {
            NodeState::Stopped | NodeState::Suspended => Ok(NodeState::Creating),
            s => Err(DomainError::new(
                Code::NodeRunning,
                format!(
                    "node {node:?} is {}: only a Stopped or Suspended node can be relaunched (shut it down first)",
                    s.as_str()
                ),
            )),
        }
    }

    /// Running or Paused → Suspended, once its memory is on disk.
    pub fn suspend(self, node: &str) -> Result<NodeState, DomainError> {
        match self {
            NodeState::Running | NodeState::Paused => Ok(NodeState::Suspended),
            s => Err(DomainError::new(
                Code::NodeNotRunning,
                format!(
                    "node {node:?} is {}: only a Running or Paused node can be suspended",
                    s.as_str()
                ),
            )),
        }
    }

    /// Suspended → Creating: the node's memory comes back from disk (a restore).
    pub fn restore(self, node: &str) -> Result<NodeState, DomainError> {
        match self {
            NodeState::Suspended => Ok(NodeState::Creating),
            s => Err(DomainError::new(
                Code::NodeNotRunning,
                format!(
                    "node {node:?} is {}: only a Suspended node can be restored",
                    s.as_str()
                ),
            )),
        }
    }

    /// Running or Paused → Stopped: the node's init exited on its own.
    pub fn stopped(self) -> NodeState {
        match self {
            NodeState::Running | NodeState::Paused => NodeState::Stopped,
            s => s,
        }
    }

    /// The refusal of exec and copy for a node that is not Running.
    pub fn require_agent(self, node: &str) -> Result<(), DomainError> {
        match self {
            NodeState::Running => Ok(()),
            NodeState::Creating => Err(DomainError::new(
                Code::NodeNotReady,
                format!("node {node:?} is still being created: retry, or create with ?wait=agent"),
            )),
            NodeState::Deleting => Err(DomainError::new(
                Code::NodeDeleting,
                format!("node {node:?} is being deleted"),
            )),
            // Its supervisor said so (the daemon watches every live node's init).
            NodeState::Stopped => Err(DomainError::new(
                Code::NodeNotRunning,
                format!(
                    "node {node:?} has stopped (its init exited): `POST /vm/{node}/relaunch` starts it again, or delete it"
                ),
            )),
            NodeState::Suspended => Err(DomainError::new(
                Code::NodeNotRunning,
                format!("node {node:?} is Suspended (its memory is on disk): `POST /vm/{node}/restore` brings it back"),
            )),
            s => Err(DomainError::new(
                Code::NodeNotRunning,
                format!("node {node:?} is {}", s.as_str()),
            )),
        }
    }

    fn not_in(self, node: &str, from: NodeState, verb: &str) -> DomainError {
        DomainError::new(
            Code::NodeNotRunning,
            format!(
                "node {node:?} is {}: only a {} node can be {verb}",
                self.as_str(),
                from.as_str()
            ),
        )
    }
}

impl From<NodeState> for bulkhead_api::NodeStatus {
    fn from(s: NodeState) -> Self {
        match s {
            NodeState::Creating => bulkhead_api::NodeStatus::Creating,
            NodeState::Running => bulkhead_api::NodeStatus::Running,
            NodeState::Paused => bulkhead_api::NodeStatus::Paused,
            NodeState::Stopped => bulkhead_api::NodeStatus::Stopped,
            NodeState::Deleting => bulkhead_api::NodeStatus::Deleting,
            // Slicer has no word for it: nothing of the node runs.
            NodeState::Suspended => bulkhead_api::NodeStatus::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NodeState::{self, *};
    use crate::error::Code;

    /// Every state against every transition: the whole table, so a change to one rule shows
    /// up here as a deliberate edit.
    #[test]
    fn transition_table() {
        type T = fn(NodeState, &str) -> Result<NodeState, super::DomainError>;
        let events: [(&str, T); 8] = [
            ("started", NodeState::started),
            ("pause", NodeState::pause),
            ("resume", NodeState::resume),
            ("delete", NodeState::delete),
            ("shutdown", NodeState::shutdown),
            ("relaunch", NodeState::relaunch),
            ("suspend", NodeState::suspend),
            ("restore", NodeState::restore),
        ];
        let expect = |s: NodeState, e: &str| -> Result<NodeState, Code> {
            match (s, e) {
                (Creating, "started") => Ok(Running),
                (_, "started") => Err(Code::Internal),
                (Running, "pause") => Ok(Paused),
                (Paused, "resume") => Ok(Running),
                (_, "pause" | "resume") => Err(Code::NodeNotRunning),
                (Creating, "delete") => Err(Code::NodeNotReady),
                (Deleting, "delete") => Err(Code::NodeDeleting),
                (_, "delete") => Ok(Deleting),
                (Running | Paused, "shutdown") => Ok(Stopped),
                (_, "shutdown") => Err(Code::NodeNotRunning),
                (Stopped | Suspended, "relaunch") => Ok(Creating),
                (_, "relaunch") => Err(Code::NodeRunning),
                (Running | Paused, "suspend") => Ok(Suspended),
                (_, "suspend") => Err(Code::NodeNotRunning),
                (Suspended, "restore") => Ok(Creating),
                (_, "restore") => Err(Code::NodeNotRunning),
                _ => unreachable!(),
            }
        };
        for s in NodeState::ALL {
            for (name, f) in events {
                let got = f(s, "n-1").map_err(|e| e.code);
                assert_eq!(got, expect(s, name), "{} --{name}-->", s.as_str());
            }
        }
    }

    #[test]
    fn predicates_agree_with_transitions() {
        for s in NodeState::ALL {
            assert_eq!(s.can_pause(), s.pause("n").is_ok());
            assert_eq!(s.can_resume(), s.resume("n").is_ok());
            assert_eq!(s.can_delete(), s.delete("n").is_ok());
            assert_eq!(s.can_reach_agent(), s.require_agent("n").is_ok());
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
            if s != Suspended {
                assert_eq!(
                    bulkhead_api::NodeStatus::from(s).as_str(),
                    s.as_str(),
                    "stored and wire words agree"
                );
            }
        }
        // Slicer's clients know Running, Paused and Stopped: a suspended node is Stopped.
        assert_eq!(
            bulkhead_api::NodeStatus::from(Suspended).as_str(),
            "Stopped"
        );
        assert_eq!(
            Suspended.stopped(),
            Suspended,
            "its own exit leaves it Suspended"
        );
        assert!(!Suspended.is_live() && !Suspended.can_reach_agent());
        assert_eq!(Running.stopped(), Stopped);
        assert_eq!(Paused.stopped(), Stopped);
        assert_eq!(Creating.stopped(), Creating);
        assert_eq!(Deleting.stopped(), Deleting);
        assert!(Running.is_live() && Paused.is_live() && !Stopped.is_live());
        assert!(NodeState::parse("running").is_none());
    }

    #[test]
    fn refusals_name_the_node_and_the_state() {
        let e = Creating.require_agent("g-1").unwrap_err();
        assert_eq!(e.code, Code::NodeNotReady);
        assert!(e.message.contains("g-1") && e.message.contains("wait=agent"));
        let e = Stopped.pause("g-2").unwrap_err();
        assert!(e.message.contains("Stopped") && e.message.contains("Running"));
    }
}
