//! Seccomp violations attributed to tenant and node (#14, part C; ADR 0033).
//!
//! The jail installs its filters with `SECCOMP_FILTER_FLAG_LOG`, so the kernel writes an audit
//! record (`type=1326`) for every call they deny; QEMU's own `-sandbox` kills are logged by
//! the kernel's defaults. One reader per daemon process follows `/dev/kmsg` from its end (each
//! open of /dev/kmsg has its own position, so other daemons on the host read the same log
//! undisturbed), on an OS thread of its own: its reads block in the kernel, never the runtime,
//! and never spin. For each record it reads `/proc/<pid>/cgroup` at once; a pid inside
//! `bulkhead/<tenant>/<cgroup id>` of a node of a tenant this process serves, or (the task has
//! already exited, as a denied call often makes it) a record whose audit session is that of
//! one node's supervisor (`bulkhead_driver::audit_session`), counts `bulkhead_seccomp_violations_total{tenant,node}` and emits
//! `seccomp.violation`. Everything else (other daemons' tenants, the host's own processes) is
//! ignored.
//!
//! Invariants: at most one reader thread per process; a record is attributed only through what
//! the kernel reports (the pid's cgroup, the task's audit session), never through anything the
//! node chose (comm, exe); a session shared by several nodes (or the daemon's own) names none;
//! the counters only grow while the daemon runs.

mod names;
pub mod record;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::tenant::Tenant;
use record::{Line, Record};

const KMSG: &str = "/dev/kmsg";
const ACTIONS_LOGGED: &str = "/proc/sys/kernel/seccomp/actions_logged";

/// The reader's state, as `bulkhead_seccomp_watch_up` shows it.
const NOT_STARTED: u8 = 0;
const READING: u8 = 1;
const UNREADABLE: u8 = 2;

/// The process-wide watcher.
struct Watch {
    tenants: Mutex<Vec<Weak<Tenant>>>,
    /// (tenant, node) → violations.
    counts: Mutex<BTreeMap<(String, String), u64>>,
    state: AtomicU8,
    /// Kernel audit messages the printk rate limit dropped (any audit type, host-wide).
    suppressed: AtomicU64,
    /// Records overwritten in the kernel's ring before the reader got to them (EPIPE).
    overwritten: AtomicU64,
    /// Records of tasks in no node cgroup (gone, exiting, or the host's) whose audit session named
    /// no node of this process.
    unattributed: AtomicU64,
}

fn watch() -> &'static Watch {
    static W: OnceLock<Watch> = OnceLock::new();
    W.get_or_init(|| Watch {
        tenants: Mutex::new(Vec::new()),
        counts: Mutex::new(BTreeMap::new()),
        state: AtomicU8::new(NOT_STARTED),
        suppressed: AtomicU64::new(0),
        overwritten: AtomicU64::new(0),
        unattributed: AtomicU64::new(0),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers the daemon's tenants and starts the reader (once per process). Call inside the
/// runtime: events are emitted from the reader thread within it. Says at WARN when
/// violations cannot be seen, and why.
pub fn start(tenants: impl IntoIterator<Item = Arc<Tenant>>) {
    let w = watch();
    {
        let mut ts = lock(&w.tenants);
        ts.retain(|t| t.strong_count() > 0);
        ts.extend(tenants.into_iter().map(|t| Arc::downgrade(&t)));
    }
    if w.state.load(Ordering::Relaxed) != NOT_STARTED {
        return;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(a) = std::fs::read_to_string(ACTIONS_LOGGED) {
            if !a.split_whitespace().any(|x| x == "errno") {
                tracing::warn!(
                    file = ACTIONS_LOGGED,
                    logged = a.trim(),
                    "the kernel does not log seccomp errno answers: node seccomp violations are not seen; add errno to that file"
                );
            }
        }
        let file = match open_at_end() {
            Ok(f) => f,
            Err(e) => {
                w.state.store(UNREADABLE, Ordering::Relaxed);
                tracing::warn!(
                    file = KMSG,
                    error = %e,
                    "cannot read the kernel log: node seccomp violations are not counted (bulkhead_seccomp_watch_up 0)"
                );
                return;
            }
        };
        w.state.store(READING, Ordering::Relaxed);
        let rt = tokio::runtime::Handle::try_current().ok();
        let spawned = std::thread::Builder::new()
            .name("seccomp-watch".into())
            .spawn(move || {
                let _guard = rt.as_ref().map(|h| h.enter());
                read_loop(file);
            });
        if let Err(e) = spawned {
            w.state.store(UNREADABLE, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot start the kernel log reader: node seccomp violations are not counted");
        }
    });
}

fn open_at_end() -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(KMSG)?;
    // SEEK_END on /dev/kmsg: the next read returns the next record logged from now on.
    f.seek(SeekFrom::End(0))?;
    Ok(f)
}

/// One record per read(2); blocks in the kernel until one comes.
fn read_loop(mut f: std::fs::File) {
    use std::io::Read;
    let w = watch();
    // A kmsg record is at most ~1 KiB of text plus its dictionary; a smaller buffer is EINVAL.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match f.read(&mut buf) {
            // Not seen from /dev/kmsg; never spin on it if a kernel did.
            Ok(0) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                if let Some(text) = record::kmsg_text(&rec) {
                    handle(text);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                // Records were overwritten before we read them; the next read resumes at
                // the oldest one kept.
                w.overwritten.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                w.state.store(UNREADABLE, Ordering::Relaxed);
                tracing::warn!(file = KMSG, error = %e, "reading the kernel log failed: node seccomp violations are no longer counted");
                return;
            }
        }
    }
}

fn handle(text: &str) {
    let w = watch();
    match record::parse(text) {
        Line::Seccomp(r) => {
            // At once: the task may be about to exit (a denied call often ends it).
            let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", r.pid)).ok();
            // An exiting task's v1 cgroups read as "/", a reaped one has no file: then its
            // audit session names its node (bulkhead_driver::audit_session).
            // A node found by cgroup whose own session differs from the record's is a pid
            // reused since the call: the session decides.
            let found = cgroup
                .as_deref()
                .and_then(node_cgroup)
                .and_then(|(t, id)| by_cgroup(&t, &id))
                .filter(|(t, node)| {
                    r.ses == u32::MAX || node_session(t, node).is_none_or(|s| s == r.ses)
                })
                .or_else(|| by_session(r.ses));
            if found.is_none() && cgroup.as_deref().and_then(node_cgroup).is_none() {
                w.unattributed.fetch_add(1, Ordering::Relaxed);
            }
            if let Some((t, node)) = found {
                attribute(&t, &node, &r);
            }
        }
        Line::Suppressed(n) => {
            w.suppressed.fetch_add(n, Ordering::Relaxed);
        }
        Line::Other => {}
    }
}

/// The node cgroup (`bulkhead/<tenant>/<id>`) in a `/proc/<pid>/cgroup` text, if any (v2's
/// `0::/path` or any v1 hierarchy's `n:ctrl:/path`).
pub fn node_cgroup(text: &str) -> Option<(String, String)> {
    text.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        let mut parts = path.trim_start_matches('/').split('/');
        if parts.next()? != "bulkhead" {
            return None;
        }
        let (tenant, id) = (parts.next()?, parts.next()?);
        (!tenant.is_empty() && !tenant.starts_with('_') && !id.is_empty())
            .then(|| (tenant.to_owned(), id.to_owned()))
    })
}

fn tenants() -> Vec<Arc<Tenant>> {
    lock(&watch().tenants)
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

/// The node of `tenant` (if this process serves it) whose cgroup id is `id`.
fn by_cgroup(tenant: &str, id: &str) -> Option<(Arc<Tenant>, String)> {
    let t = tenants().into_iter().find(|t| t.name == tenant)?;
    let node = t
        .list()
        .rows()
        .iter()
        .find(|row| row.cgroup.as_deref() == Some(id))?
        .name
        .clone();
    Some((t, node))
}

/// The node whose supervisor holds audit session `ses`. Sessions the daemon shares (its own,
/// which supervisors keep when the kernel refused them one of their own) name no node.
fn by_session(ses: u32) -> Option<(Arc<Tenant>, String)> {
    use bulkhead_driver::audit_session::session_of;
    if ses == u32::MAX || session_of("self") == Some(ses) {
        return None;
    }
    let mut hits = Vec::new();
    for t in tenants() {
        for row in t.list().rows() {
            if node_session(&t, &row.name) == Some(ses) {
                hits.push((t.clone(), row.name.clone()));
            }
        }
    }
    (hits.len() == 1).then(|| hits.remove(0))
}

/// The audit session of the node's supervisor (and so of everything the node runs).
fn node_session(t: &Tenant, node: &str) -> Option<u32> {
    let st = bulkhead_driver::spec::read_supervisor_state(&t.dir.join("nodes").join(node))?;
    bulkhead_driver::audit_session::session_of(&st.supervisor_pid.to_string())
}

/// Counts the violation for the node and emits its event.
fn attribute(t: &Tenant, node: &str, r: &Record) {
    let w = watch();
    *lock(&w.counts)
        .entry((t.name.clone(), node.to_owned()))
        .or_default() += 1;
    let name = names::name(r.arch, r.syscall);
    tracing::info!(tenant = %t.name, node, syscall = r.syscall, name, pid = r.pid, comm = %r.comm, action = r.action(), "seccomp violation");
    t.events.emit(
        crate::events::kind::SECCOMP_VIOLATION,
        Some(node),
        serde_json::json!({
            "syscall": r.syscall,
            "name": name,
            "pid": r.pid,
            "comm": r.comm,
            "exe": r.exe,
            "action": r.action(),
        }),
    );
}

/// Prometheus text for `/metrics`: the tenants' violations by node, whether the reader runs,
/// and (for a global-admin) the host-wide losses.
pub fn metrics<'a>(tenants: impl IntoIterator<Item = &'a Tenant>, global_admin: bool) -> String {
    let w = watch();
    let mut out = String::new();
    let name = "bulkhead_seccomp_violations_total";
    out.push_str(&format!(
        "# HELP {name} System calls a node's seccomp policy denied (kernel audit records; bursts beyond the kernel's printk rate limit are undercounted).\n# TYPE {name} counter\n"
    ));
    let counts = lock(&w.counts);
    for t in tenants {
        for ((tn, node), v) in counts.range((t.name.clone(), String::new())..) {
            if *tn != t.name {
                break;
            }
            out.push_str(&format!("{name}{{tenant=\"{tn}\",node=\"{node}\"}} {v}\n"));
        }
    }
    drop(counts);
    let up = u64::from(w.state.load(Ordering::Relaxed) == READING);
    let gauge = "bulkhead_seccomp_watch_up";
    out.push_str(&format!("# HELP {gauge} 1 while the daemon reads the kernel log for seccomp records; 0 when it cannot (violations are then not counted).\n# TYPE {gauge} gauge\n{gauge} {up}\n"));
    if global_admin {
        for (n, help, v) in [
            ("bulkhead_seccomp_log_suppressed_total", "Kernel audit messages the printk rate limit dropped, host-wide, any audit type (an upper bound of seccomp records lost).", &w.suppressed),
            ("bulkhead_seccomp_log_overwritten_total", "Times the kernel log ring overwrote records before the daemon read them.", &w.overwritten),
            ("bulkhead_seccomp_unattributed_total", "Seccomp records of tasks in no node cgroup (exited before it could be read, or not a node's) whose audit session names no node of this daemon (host-wide: the host's own processes count here too).", &w.unattributed),
        ] {
            out.push_str(&format!("# HELP {n} {help}\n# TYPE {n} counter\n{n} {}\n", v.load(Ordering::Relaxed)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cgroups_on_v1_and_v2() {
        let v1 = "9:name=systemd:/\n4:memory:/bulkhead/acme/01JCG0ABC\n1:cpu:/bulkhead/acme/01JCG0ABC\n0::/\n";
        assert_eq!(node_cgroup(v1), Some(("acme".into(), "01JCG0ABC".into())));
        let v2 = "0::/bulkhead/t2/cg-7\n";
        assert_eq!(node_cgroup(v2), Some(("t2".into(), "cg-7".into())));
        // The daemon's own cgroup, a tenant level, and anything else: no node.
        for other in [
            "0::/bulkhead/_daemon/x\n",
            "0::/bulkhead/acme\n",
            "0::/user.slice/bulkhead/acme/x\n",
            "4:memory:/process_api/34b4\n",
            "",
        ] {
            assert_eq!(node_cgroup(other), None, "{other}");
        }
    }
}
