//! Driving a running background exec beyond Slicer's kill (#15, C: E2B's processes): writing
//! and closing its stdin, typing into and resizing its terminal, a plain signal, and finding
//! the execs of a node by the pid the agent gave them or by their tag.
//!
//! Invariants: only a running exec is found by pid or tag (an ended one is gone for E2B, as
//! it is for envd), and pids are unique among a node's running commands (one pid namespace
//! per node); input goes through the exec's one agent session, in order, under its lock; a
//! write to an exec without stdin, or to a closed stdin, is refused, never silently dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bulkhead_agent::client::AgentError;
use bulkhead_agent::proto::WinSize;
use bulkhead_core::{Code, DomainError};

use super::{BgExec, BgExecs};

/// How a client names an exec: E2B's `ProcessSelector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    Pid(i32),
    Tag(&'a str),
}

fn refused(msg: impl Into<String>) -> DomainError {
    DomainError::new(Code::ExecGone, msg)
}

impl BgExecs {
    /// The running exec of `node` that `sel` names: by pid, or the newest with that tag.
    pub fn find(&self, node: &str, sel: Selector<'_>) -> Result<Arc<BgExec>, DomainError> {
        let found = self.running(node).into_iter().rev().find(|e| match sel {
            Selector::Pid(p) => e.pid == p,
            Selector::Tag(t) => e.launch.opts.tag.as_deref() == Some(t),
        });
        found.ok_or_else(|| match sel {
            Selector::Pid(p) => DomainError::not_found(format!("process with pid {p} not found")),
            Selector::Tag(t) => DomainError::not_found(format!("process with tag {t} not found")),
        })
    }

    /// `node`'s execs that still run, oldest first.
    pub fn running(&self, node: &str) -> Vec<Arc<BgExec>> {
        self.list(node)
            .into_iter()
            .filter(|e| e.end().is_none())
            .collect()
    }
}

impl BgExec {
    /// Whether it runs on a terminal.
    pub fn tty(&self) -> bool {
        self.launch.opts.tty
    }

    /// #16 B1: whether it takes input (`stdin`, or a terminal), and whether its stdin was
    /// closed, for `POST .../stdin`'s refusals.
    pub fn takes_stdin(&self) -> bool {
        self.launch.opts.stdin || self.tty()
    }
    pub fn stdin_is_closed(&self) -> bool {
        self.stdin_closed.load(Ordering::Acquire)
    }

    /// Writes to its stdin (a terminal's input when it has one). Refused when it was started
    /// without stdin or its stdin was closed.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), DomainError> {
        if !self.launch.opts.stdin && !self.tty() {
            return Err(DomainError::invalid(format!(
                "process {} was started without stdin: start it with stdin",
                self.pid
            )));
        }
        if self.stdin_closed.load(Ordering::Acquire) {
            return Err(DomainError::invalid(format!(
                "the stdin of process {} is closed",
                self.pid
            )));
        }
        let mut g = self.input.lock().await;
        let input = g
            .as_mut()
            .ok_or_else(|| refused(format!("process {} has ended", self.pid)))?;
        input
            .write_stdin(data)
            .await
            .map_err(crate::tenant::agent_error)
    }

    /// Ends its stdin (end of file). Once; later calls and an exec without stdin do nothing.
    pub async fn close_stdin(&self) -> Result<(), DomainError> {
        if !self.launch.opts.stdin || self.stdin_closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut g = self.input.lock().await;
        match g.as_mut() {
            Some(input) => input
                .close_stdin()
                .await
                .map_err(crate::tenant::agent_error),
            None => Ok(()),
        }
    }

    /// Sets its terminal's size (the command gets `SIGWINCH`).
    pub async fn resize(&self, size: WinSize) -> Result<(), DomainError> {
        let mut g = self.input.lock().await;
        let input = g
            .as_mut()
            .ok_or_else(|| refused(format!("process {} has ended", self.pid)))?;
        input.resize(size).await.map_err(crate::tenant::agent_error)
    }

    /// Sends `sig` to its process group, with no SIGKILL after it (unlike [`BgExec::kill`]).
    /// An agent that takes no signals (protocol version 1) is told by closing the session,
    /// which kills the command.
    pub async fn signal(&self, sig: i32) -> Result<(), DomainError> {
        let mut g = self.input.lock().await;
        let input = g.as_mut().ok_or_else(|| {
            DomainError::not_found(format!("process with pid {} not found", self.pid))
        })?;
        match input.signal(sig).await {
            Ok(()) => Ok(()),
            Err(AgentError::Unsupported { .. }) => {
                let _ = input.shutdown().await;
                Ok(())
            }
            Err(_) if self.end().is_some() => Ok(()),
            Err(e) => Err(crate::tenant::agent_error(e)),
        }
    }
}
