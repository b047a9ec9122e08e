//! Userdata: the script a node runs once, as root inside it, at its first start (ADR 0018).
//! The daemon runs it through the node's agent once the agent answers, appends what it prints
//! to the node's console log, and records its exit code with the node, so that health reports
//! `userdata_ran` and a relaunch does not run it again. `wait=userdata` makes the create wait
//! for its end; otherwise it runs in the background.

use bulkhead_agent::client::ExecEvent;
use bulkhead_agent::proto::ExecRequest;
use bulkhead_core::{Code, DomainError};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Tenant, Wait};

/// Where the script is written inside the node before it runs.
const SCRIPT: &str = "/var/lib/bulkhead/userdata";
/// What of its output goes to the console log at most (the rest is dropped, and said so).
const MAX_LOGGED: usize = 256 * 1024;
/// How long a background run waits for the node's agent before giving up.
const AGENT_PATIENCE: Duration = Duration::from_secs(300);

impl Tenant {
    /// What a (re)started node does before its create answers: wait for its agent, run its
    /// userdata (if it has some that has not run), as `wait` asks.
    pub(super) async fn after_start(
        self: &Arc<Self>,
        name: &str,
        wait: Wait,
        deadline: Instant,
    ) -> Result<(), DomainError> {
        let pending = self
            .store
            .get(name)
            .is_some_and(|r| r.userdata.is_some() && r.userdata_exit.is_none());
        // secrets (#13): given once the agent answers, before the userdata runs.
        let secrets = !self.node_secrets(name).is_empty();
        match wait {
            Wait::None => self.identity_soon(name), // workload identity (#11)
            Wait::Agent => {
                self.wait_agent(name, deadline).await?;
                self.deliver_secrets(name).await?; // secrets (#13)
            }
            Wait::Userdata => {
                self.wait_agent(name, deadline).await?;
                self.deliver_secrets(name).await?; // secrets (#13)
                if pending {
                    let left = deadline.saturating_duration_since(Instant::now());
                    return match tokio::time::timeout(left, self.run_userdata(name)).await {
                        Ok(r) => r,
                        Err(_) => Err(DomainError::new(
                            Code::Timeout,
                            format!("node {name:?}'s userdata did not finish in time; the node was removed"),
                        )),
                    };
                }
                return Ok(());
            }
        }
        // Nobody waits (wait=none): secrets (#13) and userdata in the background, in that order.
        let background = wait == Wait::None && secrets;
        if pending || background {
            let (t, name) = (self.clone(), name.to_string());
            tokio::spawn(async move {
                let deadline = Instant::now() + AGENT_PATIENCE;
                let mut r = t.wait_agent(&name, deadline).await;
                if r.is_ok() && background {
                    r = t.deliver_secrets(&name).await; // secrets (#13)
                }
                let r = match r {
                    Ok(()) if pending => t.run_userdata(&name).await,
                    other => other,
                };
                if let Err(e) = r {
                    tracing::warn!(node = %name, error = %e, "userdata did not run");
                }
            });
        }
        Ok(())
    }

    /// Runs the node's userdata through its agent and records how it ended.
    async fn run_userdata(&self, name: &str) -> Result<(), DomainError> {
        let node = self.node(name)?;
        let Some(script) = node.row().userdata.clone() else {
            return Ok(());
        };
        // The script goes in on stdin and is written to a file first, so that its own `#!`
        // line picks its interpreter (a script without one runs under /bin/sh).
        let req = ExecRequest {
            cmd: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "mkdir -p \"${0%/*}\" && cat > \"$0\" && chmod 0700 \"$0\" || exit 125; \
                 IFS= read -r l < \"$0\"; exec </dev/null 2>&1; \
                 case \"$l\" in '#!'*) exec \"$0\";; *) exec /bin/sh \"$0\";; esac"
                    .into(),
                SCRIPT.into(),
            ],
            env: vec![],
            cwd: Some("/".into()),
            uid: 0,
            gid: 0,
            stdin: true,
            timeout_ms: None,
            tty: None,
            ..Default::default()
        };
        let mut s = self.exec(&node, req).await?;
        let io = |e: bulkhead_agent::client::AgentError| {
            DomainError::new(
                Code::AgentError,
                format!("running node {name:?}'s userdata: {e}"),
            )
        };
        s.write_stdin(script.as_bytes()).await.map_err(io)?;
        s.close_stdin().await.map_err(io)?;
        let mut out = Vec::new();
        let mut dropped = 0usize;
        let status = loop {
            match s.next().await.map_err(io)? {
                Some(ExecEvent::Stdout(d)) | Some(ExecEvent::Stderr(d)) => {
                    let room = MAX_LOGGED.saturating_sub(out.len());
                    out.extend_from_slice(&d[..d.len().min(room)]);
                    dropped += d.len().saturating_sub(room);
                }
                Some(ExecEvent::Exit(st)) => break st,
                None => return Err(io(bulkhead_agent::client::AgentError::Closed)),
            }
        };
        let code = status
            .code
            .unwrap_or_else(|| 128 + status.signal.unwrap_or(0));
        self.log_userdata(&node, &out, dropped, code);
        self.store.set_userdata_exit(name, code).await?;
        tracing::info!(node = %name, exit_code = code, "userdata ran");
        Ok(())
    }

    /// Appends the userdata's output and end to the node's console log.
    fn log_userdata(&self, node: &super::NodeRef, out: &[u8], dropped: usize, code: i32) {
        let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(self.console_log(node))
        else {
            return;
        };
        let _ = f.write_all(b"--- userdata ---\n");
        let _ = f.write_all(out);
        if !out.is_empty() && !out.ends_with(b"\n") {
            let _ = f.write_all(b"\n");
        }
        if dropped > 0 {
            let _ = writeln!(
                f,
                "--- userdata: {dropped} more bytes of output not kept ---"
            );
        }
        let _ = writeln!(f, "--- userdata exited with code {code} ---");
    }
}
