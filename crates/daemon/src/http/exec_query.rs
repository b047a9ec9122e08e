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
//!
//! #16 (the containerd shim, B1): `tty=true` with `cols`/`rows` runs the command on a
//! terminal, `rlimit=NAME:SOFT:HARD` (repeatable, OCI names, `unlimited` allowed) and
//! `groups=1,2` go to the agent as they are, and `container=<cid>` names the container of
//! the node the command runs chrooted in (resolved by the handler, 404 if it does not exist).
//! A background exec may now take stdin (written with `POST .../exec/{exec_id}/stdin`).

use bulkhead_agent::proto::{ExecRequest, Rlimit, WinSize};
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
    /// #16: `container=<cid>`: the container of the node to run in (its root is looked up
    /// by the handler and set as `request.root`).
    pub container: Option<String>,
}

/// The keys the route takes.
pub const KEYS: [&str; 22] = [
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
    // #16 B1
    "tty",
    "cols",
    "rows",
    "rlimit",
    "groups",
    "container",
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
        if background.is_some() && buffered {
            return Err(DomainError::invalid(
                "a background exec has no buffered answer: drop buffered, and read its output \
                 with GET /vm/{node}/exec/{exec_id}/logs",
            ));
        }
        if buffered && request.tty.is_some() {
            return Err(DomainError::invalid(
                "a terminal's output is one stream: drop buffered or tty",
            ));
        }
        let container = q.one("container")?;
        if let Some(c) = &container {
            bulkhead_api::containers::validate_container_id(c)
                .map_err(|m| DomainError::invalid(format!("container: {m}")))?;
        }
        Ok(ExecQuery {
            request,
            stdio,
            stdout: wanted(&q, "stdout")?,
            stderr: wanted(&q, "stderr")?,
            buffered,
            background,
            command,
            container,
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
        tty: tty(q)?,
        root: None,
        rlimits: rlimits(q)?,
        groups: groups(q)?,
    })
}

/// #16: `tty=true` with `cols` and `rows` (80x24 when absent).
fn tty(q: &Query) -> Result<Option<WinSize>, DomainError> {
    let dim = |key: &str, default: u16| -> Result<u16, DomainError> {
        match q.u32(key)? {
            None => Ok(default),
            Some(n) if (1..=u16::MAX as u32).contains(&n) => Ok(n as u16),
            Some(n) => Err(DomainError::invalid(format!(
                "query parameter {key:?} must be 1 to {}, not {n}",
                u16::MAX
            ))),
        }
    };
    if !q.bool("tty")? {
        if let Some(k) = ["cols", "rows"].into_iter().find(|k| !q.all(k).is_empty()) {
            return Err(DomainError::invalid(format!(
                "{k} applies to a terminal only: add tty=true"
            )));
        }
        return Ok(None);
    }
    Ok(Some(WinSize {
        cols: dim("cols", 80)?,
        rows: dim("rows", 24)?,
    }))
}

/// The resource limits an exec may set (OCI's names, Linux's `RLIMIT_*`).
pub const RLIMIT_NAMES: [&str; 16] = [
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

/// #16: `rlimit=NAME:SOFT:HARD`, repeatable, each name once; `unlimited` is `u64::MAX`.
fn rlimits(q: &Query) -> Result<Vec<Rlimit>, DomainError> {
    let mut out: Vec<Rlimit> = Vec::new();
    for v in q.all("rlimit") {
        let bad = |why: &str| {
            DomainError::invalid(format!(
                "query parameter \"rlimit\" {v:?}: {why} (write NAME:SOFT:HARD, e.g. \
                 RLIMIT_NOFILE:1024:4096; a limit may be unlimited)"
            ))
        };
        let mut parts = v.split(':');
        let (Some(name), Some(soft), Some(hard), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not three fields"));
        };
        if !RLIMIT_NAMES.contains(&name) {
            return Err(bad(&format!(
                "unknown limit {name:?}: use one of {}",
                RLIMIT_NAMES.join(", ")
            )));
        }
        let num = |x: &str| match x {
            "unlimited" | "infinity" => Ok(u64::MAX),
            _ => x
                .parse::<u64>()
                .map_err(|_| bad(&format!("{x:?} is not a number or unlimited"))),
        };
        let (soft, hard) = (num(soft)?, num(hard)?);
        if soft > hard {
            return Err(bad("the soft limit is above the hard one"));
        }
        if out.iter().any(|r| r.name == name) {
            return Err(bad(&format!("{name} given more than once")));
        }
        out.push(Rlimit {
            name: name.to_string(),
            soft,
            hard,
        });
    }
    Ok(out)
}

/// #16: `groups=1,2` (the key may repeat; an empty value is no group).
fn groups(q: &Query) -> Result<Vec<u32>, DomainError> {
    let mut out = Vec::new();
    for v in q.all("groups") {
        for g in v.split(',').filter(|g| !g.is_empty()) {
            let gid = g.parse::<u32>().map_err(|_| {
                DomainError::invalid(format!(
                    "query parameter \"groups\": {g:?} is not a group id (write groups=1,2)"
                ))
            })?;
            if !out.contains(&gid) {
                out.push(gid);
            }
        }
    }
    if out.len() > 64 {
        return Err(DomainError::invalid(
            "query parameter \"groups\" names more than 64 groups",
        ));
    }
    Ok(out)
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
                    ..Default::default()
                },
                stdio: Stdio::Base64,
                stdout: false,
                stderr: true,
                buffered: true,
                background: None,
                command: ("ls".into(), vec!["-l".into(), "/tmp".into()]),
                container: None,
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
        assert!(err("cmd=x&tyy=1").contains("unknown query parameter \"tyy\": allowed are cmd,"));
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

    #[test]
    fn shim_keys_land_in_the_request() {
        // #16: what containerd-shim-bulkhead-v2 sends.
        let q = ExecQuery::parse(Some(
            "cmd=sh&background=true&stdin=true&tty=true&cols=120&rows=40\
             &rlimit=RLIMIT_NOFILE:1024:4096&rlimit=RLIMIT_CORE:unlimited:unlimited\
             &groups=10,20&groups=30&container=abc123",
        ))
        .unwrap();
        assert_eq!(q.background, Some(DEFAULT_RING_BYTES));
        assert!(q.request.stdin);
        assert_eq!(
            q.request.tty,
            Some(WinSize {
                cols: 120,
                rows: 40
            })
        );
        assert_eq!(
            q.request.rlimits,
            [
                Rlimit {
                    name: "RLIMIT_NOFILE".into(),
                    soft: 1024,
                    hard: 4096
                },
                Rlimit {
                    name: "RLIMIT_CORE".into(),
                    soft: u64::MAX,
                    hard: u64::MAX
                }
            ]
        );
        assert_eq!(q.request.groups, [10, 20, 30]);
        assert_eq!(q.container.as_deref(), Some("abc123"));
        assert_eq!(q.request.root, None);
        // A terminal without a size is 80x24; none of the keys: nothing changes.
        let q = ExecQuery::parse(Some("cmd=sh&tty=true")).unwrap();
        assert_eq!(q.request.tty, Some(WinSize { cols: 80, rows: 24 }));
        let q = ExecQuery::parse(Some("cmd=sh&tty=false&groups=")).unwrap();
        assert_eq!((q.request.tty, q.request.groups.len()), (None, 0));
        assert!(q.request.rlimits.is_empty() && q.container.is_none());
    }

    #[test]
    fn shim_key_mistakes_are_named() {
        assert!(err("cmd=x&cols=80").contains("cols applies to a terminal only"));
        assert!(err("cmd=x&tty=true&rows=0").contains("\"rows\" must be 1 to 65535"));
        assert!(err("cmd=x&tty=true&cols=70000").contains("\"cols\" must be 1 to 65535"));
        assert!(err("cmd=x&tty=maybe").contains("\"tty\" must be true or false"));
        assert!(err("cmd=x&tty=true&buffered=true").contains("drop buffered or tty"));
        assert!(err("cmd=x&rlimit=RLIMIT_NOFILE:1").contains("not three fields"));
        assert!(err("cmd=x&rlimit=NOFILE:1:2").contains("unknown limit \"NOFILE\""));
        assert!(err("cmd=x&rlimit=RLIMIT_NOFILE:a:2").contains("\"a\" is not a number"));
        assert!(err("cmd=x&rlimit=RLIMIT_NOFILE:3:2").contains("soft limit is above"));
        assert!(
            err("cmd=x&rlimit=RLIMIT_NOFILE:1:2&rlimit=RLIMIT_NOFILE:1:2")
                .contains("RLIMIT_NOFILE given more than once")
        );
        assert!(err("cmd=x&groups=1,x").contains("\"x\" is not a group id"));
        assert!(err("cmd=x&groups=-1").contains("is not a group id"));
        assert!(err("cmd=x&container=a%2Fb").starts_with("container: invalid container id"));
        assert!(err("cmd=x&container=a&container=b").contains("given more than once"));
        let many: Vec<String> = (0..65).map(|g| g.to_string()).collect();
        assert!(err(&format!("cmd=x&groups={}", many.join(","))).contains("more than 64"));
    }
}
