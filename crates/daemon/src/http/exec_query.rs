//! The query of `POST /vm/{node}/exec`, parsed in one place into one typed [`ExecQuery`].
//!
//! Parsing is the strict query parser's (`query.rs`): unknown keys are refused naming the key
//! and the allowed ones, invalid UTF-8 and repeated single keys are refused, and every bad
//! value is named with its key. Checks run in a fixed order, so a request with several
//! mistakes always hears about the same one first.

use bulkhead_agent::proto::ExecRequest;
use bulkhead_api::names;
use bulkhead_core::DomainError;

use super::query::Query;

/// How an exec's stdout and stderr travel (`stdio=`): UTF-8 text (lossy for binary output),
/// or base64 (exact), as Slicer's API offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    Text,
    Base64,
}

impl Stdio {
    /// The `encoding` field of frames and buffered answers.
    pub fn encoding(self) -> Option<String> {
        (self == Stdio::Base64).then(|| "base64".to_string())
    }
}

/// Everything an exec request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecQuery {
    /// What the agent runs (with `shell`, the shell and `-c LINE`).
    pub request: ExecRequest,
    pub stdio: Stdio,
    /// Whether stdout and stderr are passed on (`stdout=false` drops it).
    pub stdout: bool,
    pub stderr: bool,
    /// One JSON answer at the end instead of NDJSON frames.
    pub buffered: bool,
}

/// The keys the route takes.
pub const KEYS: [&str; 15] = [
    "cmd",
    "args",
    "env",
    "uid",
    "gid",
    "cwd",
    "shell",
    "stdin",
    "stdout",
    "stderr",
    "buffered",
    "background",
    "ring_bytes",
    "timeout",
    "stdio",
];

impl ExecQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, DomainError> {
        let q = Query::parse(raw, &KEYS)?;
        let request = request(&q)?;
        let stdio = match q.one("stdio")?.as_deref() {
            None | Some("text") => Stdio::Text,
            Some("base64") => Stdio::Base64,
            Some(v) => {
                return Err(DomainError::invalid(format!(
                    "stdio {v:?} is not supported: use text (the default) or base64"
                )))
            }
        };
        Ok(ExecQuery {
            request,
            stdio,
            stdout: wanted(&q, "stdout")?,
            stderr: wanted(&q, "stderr")?,
            buffered: q.bool("buffered")?,
        })
    }
}

/// An output stream is passed on unless it is turned off with `false` or `0`.
fn wanted(q: &Query, key: &str) -> Result<bool, DomainError> {
    Ok(q.one(key)?
        .as_deref()
        .is_none_or(|v| v != "false" && v != "0"))
}

fn request(q: &Query) -> Result<ExecRequest, DomainError> {
    let cmd = q.one("cmd")?.ok_or_else(|| {
        DomainError::invalid("query parameter cmd is required, e.g. ?cmd=uname&args=-a")
    })?;
    if cmd.is_empty() {
        return Err(DomainError::invalid("cmd is empty"));
    }
    let mut args = q.all("args");
    let env = q.all("env");
    for e in &env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(DomainError::invalid(format!(
                "env entry {e:?} must be KEY=VALUE"
            )));
        }
    }
    let cwd = q.one("cwd")?;
    if let Some(c) = &cwd {
        names::validate_node_path(c).map_err(|m| DomainError::invalid(format!("cwd: {m}")))?;
    }
    let (cmd, args) = match q.one("shell")?.as_deref() {
        None | Some("false") | Some("0") => (cmd, args),
        Some(sh) => {
            let shell = if matches!(sh, "" | "true" | "1") {
                "/bin/sh".to_string()
            } else {
                sh.to_string()
            };
            let mut line = cmd;
            for a in args.drain(..) {
                line.push(' ');
                line.push_str(&a);
            }
            (shell, vec!["-c".to_string(), line])
        }
    };
    if q.bool("background")? {
        return Err(DomainError::invalid(
            "background execs are not supported by this build yet",
        ));
    }
    if q.one("ring_bytes")?.is_some() {
        return Err(DomainError::invalid(
            "ring_bytes applies to background execs, which this build does not support yet",
        ));
    }
    let timeout_ms = q.duration("timeout")?.map(|d| d.as_millis().max(1) as u64);
    Ok(ExecRequest {
        cmd,
        args,
        env,
        cwd,
        uid: q.u32("uid")?.unwrap_or(0),
        gid: q.u32("gid")?.unwrap_or(0),
        stdin: q.bool("stdin")?,
        timeout_ms,
        tty: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(raw: &str) -> String {
        ExecQuery::parse(Some(raw)).unwrap_err().message
    }

    #[test]
    fn every_key_lands_in_its_field() {
        let q = ExecQuery::parse(Some(
            "cmd=ls&args=-l&args=%2Ftmp&env=A%3D1&uid=1000&gid=1001&cwd=/work&stdin=true\
             &stdout=false&stderr=1&buffered=&timeout=1.5s&stdio=base64",
        ))
        .unwrap();
        assert_eq!(
            q,
            ExecQuery {
                request: ExecRequest {
                    cmd: "ls".into(),
                    args: vec!["-l".into(), "/tmp".into()],
                    env: vec!["A=1".into()],
                    cwd: Some("/work".into()),
                    uid: 1000,
                    gid: 1001,
                    stdin: true,
                    timeout_ms: Some(1500),
                    tty: None,
                },
                stdio: Stdio::Base64,
                stdout: false,
                stderr: true,
                buffered: true,
            }
        );
        let q = ExecQuery::parse(Some("cmd=echo&args=a&args=b&shell=true")).unwrap();
        assert_eq!(q.request.cmd, "/bin/sh");
        assert_eq!(q.request.args, ["-c", "echo a b"]);
        assert_eq!(
            ExecQuery::parse(Some("cmd=x&shell=/bin/bash"))
                .unwrap()
                .request
                .cmd,
            "/bin/bash"
        );
        let q = ExecQuery::parse(Some("cmd=x")).unwrap();
        assert!(q.stdout && q.stderr && !q.buffered && !q.request.stdin);
        assert_eq!(
            (q.stdio, q.request.uid, q.request.timeout_ms),
            (Stdio::Text, 0, None)
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(err("cmd=x&tty=1").contains("unknown query parameter \"tty\": allowed are cmd,"));
        assert!(err("args=x").contains("cmd is required"));
        assert_eq!(err("cmd="), "cmd is empty");
        assert!(err("cmd=x&env=NOVALUE").contains("\"NOVALUE\" must be KEY=VALUE"));
        assert!(err("cmd=x&cwd=rel").starts_with("cwd: "));
        assert!(err("cmd=x&uid=-1").contains("\"uid\" must be a non-negative integer, not \"-1\""));
        assert!(err("cmd=x&stdin=maybe").contains("\"stdin\" must be true or false"));
        assert!(err("cmd=x&stdio=hex").contains("stdio \"hex\" is not supported"));
        assert!(err("cmd=x&timeout=soon").starts_with("query parameter \"timeout\""));
        assert!(err("cmd=x&cmd=y").contains("\"cmd\" given more than once"));
        assert!(err("cmd=%ff").contains("not valid UTF-8"));
        assert!(err("cmd=x&background=true").contains("background execs"));
        assert!(err("cmd=x&ring_bytes=10").contains("ring_bytes"));
    }
}
