//! The supervisor's control channel: `supervisor.sock` in the node's directory (root only),
//! one JSON object per line each way. What containerd asks of a shim (State, Wait, Kill) for
//! the node's init:
//!
//! ```text
//! {"op":"state"}            -> {"init_pid":41,"supervisor_pid":40,"state":"running"}
//! {"op":"wait"}             -> (once the init has exited)
//!                              {"init_pid":41,"supervisor_pid":40,"state":"exited","exit":{"signal":9},"at_unix_ms":1735689600000}
//! {"op":"kill","signal":15} -> the state after sending the signal
//! {"op":"container_mounts","root":"/var/lib/bulkhead/containers/C/rootfs","mounts":[..],"readonly":false}
//! {"op":"container_unmount","root":"..."}
//!                           -> the state once the driver's launcher made (removed) the
//!                              container's mounts in the node (#16; the jail's does, others
//!                              answer an error)
//! anything else             -> {"error":"..."}
//! ```
//!
//! Invariants: a connection may send several requests; answers come in order. The supervisor
//! keeps answering after the init exited (`exited`, with the status) until the daemon deletes
//! the node. [`client`] is the daemon's side (blocking and async).

pub mod client;

use serde::{Deserialize, Serialize};

/// Longest request line the supervisor reads; a longer one ends the connection (a container's
/// mounts fit many times over).
pub const MAX_LINE: usize = 16 * 1024;

/// A request on the control channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The init's state now.
    State,
    /// Answers once the init has exited (at once if it has).
    Wait,
    /// Sends `signal` to the node's init (SIGKILL of a pid namespace's init ends the node).
    Kill { signal: i32 },
    /// #16: makes a container's mounts under `root` in the node's mount namespace
    /// ([`crate::Launcher::container_mounts`]).
    ContainerMounts {
        root: String,
        #[serde(default)]
        mounts: Vec<bulkhead_agent::containers::ContainerMount>,
        #[serde(default)]
        readonly: bool,
    },
    /// #16: detaches every mount under a container's `root`.
    ContainerUnmount { root: String },
}

/// How the node's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl ExitStatus {
    /// From a `waitpid` status word.
    pub fn from_wait(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Whether the init runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    Running,
    Exited {
        exit: ExitStatus,
        /// When the supervisor reaped it (milliseconds since the Unix epoch).
        at_unix_ms: u64,
    },
}

/// The answer to every request that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub init_pid: i32,
    pub supervisor_pid: i32,
    #[serde(flatten)]
    pub phase: Phase,
}

impl State {
    pub fn exit(&self) -> Option<ExitStatus> {
        match self.phase {
            Phase::Running => None,
            Phase::Exited { exit, .. } => Some(exit),
        }
    }
}

/// One answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    State(State),
    Error { error: String },
}

/// Parses one request line; the error is the message sent back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let req: Request = serde_json::from_slice(line).map_err(|e| {
        format!(
            "not a control request ({e}): send {{\"op\":\"state\"}}, {{\"op\":\"wait\"}} or {{\"op\":\"kill\",\"signal\":N}}"
        )
    })?;
    if let Request::Kill { signal } = req {
        if !(1..=64).contains(&signal) {
            return Err(format!("{signal} is not a signal: give 1-64"));
        }
    }
    Ok(req)
}

/// Renders one request line (with its newline).
pub fn render_request(req: &Request) -> Vec<u8> {
    let mut v = serde_json::to_vec(req).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Renders one answer line (with its newline).
pub fn render(reply: &Reply) -> Vec<u8> {
    let mut v = serde_json::to_vec(reply).unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_what_to_send() {
        assert_eq!(parse_request(br#"{"op":"state"}"#), Ok(Request::State));
        assert_eq!(parse_request(br#"{"op":"wait"}"#), Ok(Request::Wait));
        assert_eq!(
            parse_request(br#"{"op":"kill","signal":9}"#),
            Ok(Request::Kill { signal: 9 })
        );
        for bad in [
            &br#"{"op":"kill"}"#[..],
            br#"{"op":"kill","signal":0}"#,
            br#"{"op":"kill","signal":65}"#,
            br#"{"op":"delete"}"#,
            b"state",
            b"",
        ] {
            let e = parse_request(bad).unwrap_err();
            assert!(
                e.contains("signal") || e.contains("\"op\":\"state\""),
                "{}: {e}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn states_render_as_documented_and_read_back() {
        let running = State {
            init_pid: 41,
            supervisor_pid: 40,
            phase: Phase::Running,
        };
        let line = render(&Reply::State(running));
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"init_pid\":41,\"supervisor_pid\":40,\"state\":\"running\"}\n"
        );
        let exited = State {
            phase: Phase::Exited {
                exit: ExitStatus::Signal(9),
                at_unix_ms: 1_735_689_600_000,
            },
            ..running
        };
        let line = render(&Reply::State(exited));
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"init_pid\":41,\"supervisor_pid\":40,\"state\":\"exited\",\"exit\":{\"signal\":9},\"at_unix_ms\":1735689600000}\n"
        );
        let back: Reply = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, Reply::State(exited));
        assert_eq!(exited.exit(), Some(ExitStatus::Signal(9)));
        let err: Reply =
            serde_json::from_slice(&render(&Reply::Error { error: "x".into() })).unwrap();
        assert_eq!(err, Reply::Error { error: "x".into() });
    }

    #[test]
    fn wait_statuses_map_to_code_or_signal() {
        // Status words as the kernel builds them: code << 8, or the signal number.
        assert_eq!(ExitStatus::from_wait(3 << 8), ExitStatus::Code(3));
        assert_eq!(ExitStatus::from_wait(0), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_wait(9), ExitStatus::Signal(9));
        assert_eq!(ExitStatus::from_wait(15 | 0x80), ExitStatus::Signal(15));
    }
}
