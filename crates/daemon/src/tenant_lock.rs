//! The host-wide claim on a tenant: one daemon per tenant on a host, whatever its state
//! directory or config file. Everything a tenant owns on the host is keyed by its name alone
//! (its cgroups, its uid range, its address ranges, its nft table), so two daemons of one
//! tenant would each "reconcile" the other's nodes away. The claim is an flock on
//! `/run/bulkhead/tenants/<tenant>.lock`, taken before the daemon touches anything else; the
//! file names the holder (pid, state directory, config, API endpoint) so a refused second
//! daemon can say who holds it. The kernel drops the flock when the holder dies, however it
//! dies, so a crashed daemon never blocks the next start.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Host-wide directory of tenant claims. Root only (0700): anyone who can open a lock file can
/// flock it, and so keep that tenant's daemon from starting.
pub const TENANT_REGISTRY: &str = "/run/bulkhead/tenants";

/// Who holds a tenant, as written into its lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub api: String,
}

/// The tenant's claim; held for as long as this value lives. Dropped on a clean stop, it
/// removes its file first (a crash leaves the file, unlocked and harmless).
pub struct TenantLock {
    /// Holds the flock for as long as it is open.
    _file: File,
    path: PathBuf,
}

impl Drop for TenantLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock: a daemon that opened the old file meanwhile
        // finds, once it gets the lock, that the path no longer names its file, and retries.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why the tenant could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live daemon holds the tenant (the message names it).
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> LockError {
    move |source| LockError::Io { what, source }
}

/// Takes the tenant's host-wide claim in `registry` or refuses, naming the daemon that holds it.
pub fn lock_tenant(registry: &Path, tenant: &str, me: &Holder) -> Result<TenantLock, LockError> {
    std::fs::create_dir_all(registry).map_err(io(format!("creating {}", registry.display())))?;
    std::fs::set_permissions(
        registry,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(io(format!("chmod {}", registry.display())))?;
    let path = registry.join(format!("{tenant}.lock"));
    // A holder that stops unlinks the file; whoever opened it just before must try again.
    for _ in 0..16 {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(format!("locking {}", path.display()))(err));
            }
            return Err(LockError::Refused(refusal(tenant, &path)));
        }
        let ours = file
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?;
        match std::fs::symlink_metadata(&path) {
            Ok(now) if (now.dev(), now.ino()) == (ours.dev(), ours.ino()) => {}
            _ => continue,
        }
        let mut f = &file;
        file.set_len(0)
            .and_then(|_| f.write_all(&serde_json::to_vec(me).unwrap_or_default()))
            .map_err(io(format!("writing {}", path.display())))?;
        return Ok(TenantLock { _file: file, path });
    }
    Err(LockError::Refused(format!(
        "could not take {}: it keeps being replaced; is another daemon of tenant {tenant:?} starting and stopping?",
        path.display()
    )))
}

fn refusal(tenant: &str, path: &Path) -> String {
    let holder = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
    match holder {
        Some(h) => format!(
            "tenant {tenant:?} is already served by a running daemon on this host (pid {}, state dir {}, config {}, API {}): a tenant's nodes, cgroups, uids and addresses are host-wide, so a second daemon would take them from the first; stop that daemon first (kill -TERM {}), or give this config another tenant name",
            h.pid,
            h.state_dir.display(),
            h.config.display(),
            h.api,
            h.pid
        ),
        None => format!(
            "tenant {tenant:?} is already served by a running daemon on this host (it holds {}; it has not yet said who it is): stop that daemon first, or give this config another tenant name",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(n: u32) -> Holder {
        Holder {
            pid: n,
            state_dir: format!("/state{n}").into(),
            config: format!("/cfg{n}.yaml").into(),
            api: format!("/run/{n}.sock"),
        }
    }

    #[test]
    fn one_holder_per_tenant_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("tenants");
        let a = lock_tenant(&reg, "t1", &me(1)).unwrap();
        // flock is per open file description, so a second open in this process conflicts
        // exactly as another process would.
        let e = lock_tenant(&reg, "t1", &me(2)).err().unwrap().to_string();
        assert!(
            e.contains("pid 1") && e.contains("/state1") && e.contains("/cfg1.yaml"),
            "{e}"
        );
        assert!(lock_tenant(&reg, "t2", &me(3)).is_ok());
        drop(a);
        assert!(!reg.join("t1.lock").exists());
        let b = lock_tenant(&reg, "t1", &me(4)).unwrap();
        let held: Holder =
            serde_json::from_slice(&std::fs::read(reg.join("t1.lock")).unwrap()).unwrap();
        assert_eq!(held, me(4));
        drop(b);
    }

    #[test]
    fn a_stale_file_of_a_dead_holder_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("tenants");
        std::fs::create_dir_all(&reg).unwrap();
        std::fs::write(reg.join("t1.lock"), serde_json::to_vec(&me(9)).unwrap()).unwrap();
        let l = lock_tenant(&reg, "t1", &me(5)).unwrap();
        let held: Holder =
            serde_json::from_slice(&std::fs::read(reg.join("t1.lock")).unwrap()).unwrap();
        assert_eq!(held, me(5));
        drop(l);
    }
}
