//! Prepares an exec request before the fork (all allocation happens here, none in the
//! child): the command's path (looked up in the node's PATH, or, for a container's `root`
//! (#16), candidates the child tries after its chroot), argv, the environment with a HOME from
//! the account file, the rlimits by number and the groups.

use std::ffi::CString;

use crate::proto::{Event, ExecRequest};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn find_in_path(cmd: &str, path: &str) -> Option<String> {
    if cmd.contains('/') {
        return Some(cmd.to_string());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = format!("{d}/{cmd}");
        let c = CString::new(p.clone()).ok()?;
        // SAFETY: c is a valid NUL-terminated string.
        (unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0).then_some(p)
    })
}

fn cstr(what: &str, s: &str) -> Result<CString, Event> {
    CString::new(s)
        .map_err(|_| Event::error("invalid_argument", format!("{what} contains a NUL byte")))
}

pub(crate) struct Prepared {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    /// #16: a container's root to chroot into, and the command's candidate paths inside it
    /// (searched after the chroot, like execvp).
    pub root: Option<CString>,
    pub candidates: Vec<CString>,
    /// `(resource, soft, hard)` set before anything else.
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    pub groups: Vec<libc::gid_t>,
}

/// An OCI rlimit name (`RLIMIT_NOFILE`) as the kernel's resource number.
fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Step codes the child reports (`fail`): rlimits are `RLIMIT_STEP + index`.
pub(crate) const RLIMIT_STEP: i32 = 100;

pub(crate) fn prepare(req: &ExecRequest) -> Result<Prepared, Event> {
    if req.cmd.is_empty() {
        return Err(Event::error("invalid_argument", "cmd is empty"));
    }
    let passwd = format!("{}/etc/passwd", req.root.as_deref().unwrap_or(""));
    let mut env: Vec<String> = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOME={}", home_of(req.uid, &passwd)),
        "TERM=xterm".into(),
    ];
    for e in &req.env {
        let Some((k, _)) = e.split_once('=') else {
            return Err(Event::error(
                "invalid_argument",
                format!("env entry {e:?} is not KEY=VALUE"),
            ));
        };
        if k.is_empty() {
            return Err(Event::error(
                "invalid_argument",
                format!("env entry {e:?} has an empty key"),
            ));
        }
        env.retain(|x| !x.starts_with(&format!("{k}=")));
        env.push(e.clone());
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    // In a container the command is looked up after the chroot, in its root (the child tries
    // each candidate); in the node, here, for a clear error before anything starts.
    let (path, candidates) = match &req.root {
        Some(_) if req.cmd.contains('/') => (req.cmd.clone(), vec![cstr("cmd", &req.cmd)?]),
        Some(_) => (
            req.cmd.clone(),
            path_var
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstr("PATH", &format!("{d}/{}", req.cmd)))
                .collect::<Result<_, _>>()?,
        ),
        None => match find_in_path(&req.cmd, &path_var) {
            Some(p) => (p, Vec::new()),
            None => {
                return Err(Event::error(
                    "command_not_found",
                    format!("command {:?} not found in PATH ({path_var})", req.cmd),
                ))
            }
        },
    };
    let root = match &req.root {
        Some(r) if !r.starts_with('/') => {
            return Err(Event::error(
                "invalid_argument",
                format!("root {r:?} is not an absolute path"),
            ))
        }
        Some(r) => Some(cstr("root", r)?),
        None => None,
    };
    let mut rlimits = Vec::with_capacity(req.rlimits.len());
    for l in &req.rlimits {
        let Some(res) = rlimit_resource(&l.name) else {
            return Err(Event::error(
                "invalid_argument",
                format!(
                    "unknown rlimit {:?}: use an OCI name such as RLIMIT_NOFILE",
                    l.name
                ),
            ));
        };
        if l.soft > l.hard {
            return Err(Event::error(
                "invalid_argument",
                format!(
                    "rlimit {}: soft {} is above hard {}",
                    l.name, l.soft, l.hard
                ),
            ));
        }
        rlimits.push((res, l.soft as libc::rlim_t, l.hard as libc::rlim_t));
    }
    let groups = if req.groups.is_empty() {
        vec![req.gid]
    } else {
        req.groups.clone()
    };
    let mut argv = vec![cstr("cmd", &req.cmd)?];
    for a in &req.args {
        argv.push(cstr("argument", a)?);
    }
    let envp = env
        .iter()
        .map(|e| cstr("env", e))
        .collect::<Result<_, _>>()?;
    let cwd = req.cwd.clone().unwrap_or_else(|| "/".into());
    Ok(Prepared {
        path: cstr("cmd", &path)?,
        argv,
        envp,
        cwd: cstr("cwd", &cwd)?,
        root,
        candidates,
        rlimits,
        groups,
    })
}

/// The home directory of `uid` in the node's account file (`/home/user` for E2B's `user`,
/// #15), else `/root` for root and `/` for anyone else.
fn home_of(uid: u32, passwd: &str) -> String {
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid) && f[5].starts_with('/'))
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| if uid == 0 { "/root" } else { "/" }.to_string())
}

#[cfg(test)]
mod home_tests {
    #[test]
    fn home_comes_from_the_account_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("passwd");
        std::fs::write(
            &p,
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nodd:x:7:7::relative:/bin/sh\n",
        )
        .unwrap();
        let p = p.to_str().unwrap();
        assert_eq!(super::home_of(1000, p), "/home/user");
        assert_eq!(super::home_of(0, p), "/root");
        assert_eq!(super::home_of(7, p), "/");
        assert_eq!(super::home_of(1000, "/nonexistent/passwd"), "/");
        assert_eq!(super::home_of(0, "/nonexistent/passwd"), "/root");
    }
}
