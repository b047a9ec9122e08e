//! The query of `POST /vm/{node}/exec`, parsed in one place into one typed [`ExecQuery`].
//!
//! Parsing is the strict query parser's (`query.rs`): unknown keys are refused naming the key
//! and the allowed ones, invalid UTF-8 and repeated single keys are refused, and every bad
//! value is named with its key. Checks run in a fixed order, so a request with several
//! mistakes always hears about the same one first.
//!
//! Everything Slicer's SDKs send is understood: `stdio=text|base64`, `permissions` (accepted
//! and ignored: an exec creates no file it could apply to), an empty `timeout=` (no timeout),
//! and uid/gid 4294967295, the SDKs' "default non-root user", which is the node's
//! [`DEFAULT_USER`] (ADR 0016). `background=true` with `ring_bytes` asks for a background
//! exec (`bg/`).

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

/// The SDKs' "default non-root user" sentinel (Go's `slicer.NonRootUser`, `math.MaxUint32`).
pub const NON_ROOT_SENTINEL: u32 = u32::MAX;
/// Who the sentinel stands for in a node: uid and gid 1000, the first user a distribution's
/// installer makes (Slicer's images call it `ubuntu`).
pub const DEFAULT_USER: u32 = 1000;
/// A background exec's ring when `ring_bytes` is absent or 0 (Slicer's default).
pub const DEFAULT_RING_BYTES: u64 = 1 << 20;
/// The largest ring a background exec may ask for.
pub const MAX_RING_BYTES: u64 = 16 << 20;

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
    /// `background=true`: the ring's size in bytes; `None` for an exec tied to the request.
    pub background: Option<u64>,
    /// The command and its arguments as the client gave them (before a `shell` wrapped
    /// them), for background execs' info.
    pub command: (String, Vec<String>),
}

/// The keys the route takes.
pub const KEYS: [&str; 16] = [
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
    "permissions",
];

impl ExecQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, DomainError> {
        let q = Query::parse(raw, &KEYS)?;
        let command = (q.one("cmd")?.unwrap_or_default(), q.all("args"));
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
        let _ignored = q.one("permissions")?;
        let buffered = q.bool("buffered")?;
        let background = background(&q)?;
        if background.is_some() && (buffered || request.stdin) {
            return Err(DomainError::invalid(
                "a background exec takes no stdin and has no buffered answer: drop stdin and \
                 buffered, and read its output with GET /vm/{node}/exec/{exec_id}/logs",
            ));
        }
        Ok(ExecQuery {
            request,
            stdio,
            stdout: wanted(&q, "stdout")?,
            stderr: wanted(&q, "stderr")?,
            buffered,
            background,
            command,
        })
    }
}

/// `background=true` and its `ring_bytes` (0 or absent: the default).
fn background(q: &Query) -> Result<Option<u64>, DomainError> {
    let ring = q
        .one("ring_bytes")?
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                DomainError::invalid(format!(
                    "query parameter \"ring_bytes\" must be a non-negative integer, not {v:?}"
                ))
            })
        })
        .transpose()?;
    if !q.bool("background")? {
        if ring.is_some() {
            return Err(DomainError::invalid(
                "ring_bytes applies to background execs only: add background=true",
            ));
        }
        return Ok(None);
    }
    match ring {
        None | Some(0) => Ok(Some(DEFAULT_RING_BYTES)),
        Some(n) if n > MAX_RING_BYTES => Err(DomainError::new(
            bulkhead_core::Code::OutOfRange,
            format!("ring_bytes {n} is above the limit of {MAX_RING_BYTES} (16 MiB)"),
        )),
        Some(n) => Ok(Some(n)),
    }
}

/// A uid or gid: the SDKs' non-root sentinel stands for [`DEFAULT_USER`].
fn id(q: &Query, key: &str) -> Result<u32, DomainError> {
    Ok(match q.u32(key)? {
        None => 0,
        Some(NON_ROOT_SENTINEL) => DEFAULT_USER,
        Some(n) => n,
    })
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
    // An empty `timeout=` (the SDKs send one) is no timeout.
    let timeout_ms = match q.one("timeout")?.as_deref() {
        None | Some("") => None,
        Some(_) => q.duration("timeout")?.map(|d| d.as_millis().max(1) as u64),
    };
    Ok(ExecRequest {
        cmd,
        args,
        env,
        cwd,
        uid: id(q, "uid")?,
        gid: id(q, "gid")?,
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
                background: None,
                command: ("ls".into(), vec!["-l".into(), "/tmp".into()]),
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
        assert!(err("cmd=x&ring_bytes=10").contains("add background=true"));
        assert!(err("cmd=x&background=true&ring_bytes=-1").contains("non-negative"));
        assert!(err("cmd=x&background=true&ring_bytes=16777217").contains("above the limit"));
        assert!(err("cmd=x&background=true&stdin=true").contains("takes no stdin"));
        assert!(err("cmd=x&background=true&buffered=true").contains("no buffered answer"));
    }

    #[test]
    fn what_the_sdks_send_is_understood() {
        // Go SDK's Command(): uid/gid NonRootUser, stdio, permissions, an empty timeout.
        let q = ExecQuery::parse(Some(
            "cmd=id&uid=4294967295&gid=4294967295&stdio=base64&permissions=0644&timeout=",
        ))
        .unwrap();
        assert_eq!((q.request.uid, q.request.gid), (DEFAULT_USER, DEFAULT_USER));
        assert_eq!(q.request.timeout_ms, None);
        assert_eq!(q.stdio, Stdio::Base64);
        // Background: default ring, a given ring, the command as given.
        let q = ExecQuery::parse(Some(
            "background=true&cmd=sleep%20$FOO&shell=/bin/bash&env=FOO%3D2&stdio=base64",
        ))
        .unwrap();
        assert_eq!(q.background, Some(DEFAULT_RING_BYTES));
        assert_eq!(q.command.0, "sleep $FOO");
        assert_eq!(q.request.cmd, "/bin/bash");
        let q = ExecQuery::parse(Some("background=true&cmd=x&ring_bytes=4096")).unwrap();
        assert_eq!(q.background, Some(4096));
        let q = ExecQuery::parse(Some("background=true&cmd=x&ring_bytes=0")).unwrap();
        assert_eq!(q.background, Some(DEFAULT_RING_BYTES));
    }
}
