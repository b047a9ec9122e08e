//! Master key rotation, crash-safe, and the keyring's lock file.
//!
//! Steps (each durable before the next):
//! 1. write `master.key.new` (a crashed rotation's file is reused: the rotation resumes);
//! 2. for each tenant, re-wrap its data key under the new master into `tenants/<t>.key.new`;
//! 3. rename every `<t>.key.new` over `<t>.key`, fsync the directory;
//! 4. rename `master.key.new` over `master.key`, fsync, then overwrite the old master key's
//!    blocks through a descriptor held open across the rename, and fdatasync.
//!
//! Invariant: at every point both master keys are on disk until no tenant file needs the old
//! one, and each tenant file names its master key id, so `Keyring::open` + `tenant()` succeed
//! after a crash anywhere (tested by stopping at each step). `master.key` is replaced only by a
//! rename, never rewritten in place. The lock (`flock` on `.lock`) serialises rotation with
//! tenant key creation.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::fsutil::{sync_dir, write_atomic};
use crate::keys::{
    load_master, lock, read_tenant_file, tenant_names, tenant_path, unwrap, wrap,
    write_tenant_file, KeyError, Keyring, Master, MASTER_FILE, MASTER_NEW_FILE, TENANTS_DIR,
};
use crate::secret::Secret;

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// Id of the master key that was replaced.
    pub old_key_id: String,
    /// Id of the master key now in `master.key`.
    pub new_key_id: String,
    /// Tenant keys re-wrapped.
    pub tenants: usize,
    /// True when this run finished a rotation that an earlier run left half done.
    pub resumed: bool,
}

/// Replaces the host master key and re-wraps every tenant key under the new one.
pub fn rotate_master(keys_dir: &Path) -> Result<RotateReport, KeyError> {
    rotate_until(keys_dir, &mut |_| false)
}

/// `rotate_master` that stops (as a crash would) when `crash(point)` returns true; points are
/// numbered 0, 1, ... in the order the steps run.
pub(crate) fn rotate_until(
    keys_dir: &Path,
    crash: &mut dyn FnMut(usize) -> bool,
) -> Result<RotateReport, KeyError> {
    // Creates the keyring if missing and checks permissions.
    drop(Keyring::open(keys_dir)?);
    let _lock = lock(keys_dir)?;
    let mut point = 0usize;
    let mut at = |p: &mut usize| {
        let stop = crash(*p);
        *p += 1;
        stop
    };
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { what, path, source }
    };
    let master_path = keys_dir.join(MASTER_FILE);
    let new_path = keys_dir.join(MASTER_NEW_FILE);
    let old = load_master(&master_path)?;
    let resumed = new_path.exists();
    let new = if resumed {
        load_master(&new_path)?
    } else {
        let m = Master::new(Secret::<32>::random());
        write_atomic(&new_path, m.key.expose(), 0o600).map_err(io("writing", &new_path))?;
        m
    };
    let report = |tenants| RotateReport {
        old_key_id: old.id.clone(),
        new_key_id: new.id.clone(),
        tenants,
        resumed,
    };
    if at(&mut point) {
        return Ok(report(0));
    }
    let names = tenant_names(keys_dir)?;
    for name in &names {
        let path = tenant_path(keys_dir, name);
        let file = read_tenant_file(&path, name)?;
        let master = [&old, &new]
            .into_iter()
            .find(|m| m.id == file.master_key_id)
            .ok_or_else(|| KeyError::UnknownMaster {
                path: path.clone(),
                id: file.master_key_id.clone(),
            })?;
        let key = unwrap(master, &file, &path)?;
        write_tenant_file(&staged(&path), &wrap(&new, name, &key))?;
        if at(&mut point) {
            return Ok(report(names.len()));
        }
    }
    let tdir = keys_dir.join(TENANTS_DIR);
    for name in &names {
        let path = tenant_path(keys_dir, name);
        let s = staged(&path);
        if s.exists() {
            fs::rename(&s, &path).map_err(io("renaming", &s))?;
            sync_dir(&tdir).map_err(io("syncing", &tdir))?;
        }
        if at(&mut point) {
            return Ok(report(names.len()));
        }
    }
    // Held across the rename so the old key's blocks can be overwritten afterwards.
    let mut old_file = OpenOptions::new()
        .write(true)
        .open(&master_path)
        .map_err(io("opening", &master_path))?;
    fs::rename(&new_path, &master_path).map_err(io("renaming", &new_path))?;
    sync_dir(keys_dir).map_err(io("syncing", keys_dir))?;
    if at(&mut point) {
        return Ok(report(names.len()));
    }
    old_file
        .write_all(&[0u8; 32])
        .and_then(|_| old_file.sync_data())
        .map_err(io("wiping the old master key", &master_path))?;
    Ok(report(names.len()))
}

fn staged(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".new");
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Vec<(String, Secret<64>)>) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("keys");
        let ring = Keyring::open(&dir).unwrap();
        let keys = ["a", "b", "c"]
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    ring.tenant(t).unwrap().derive("volume", "v1"),
                )
            })
            .collect();
        (d, keys)
    }

    fn check(dir: &Path, keys: &[(String, Secret<64>)]) {
        let ring = Keyring::open(dir).unwrap();
        for (t, k) in keys {
            assert_eq!(
                &ring.tenant(t).unwrap().derive("volume", "v1"),
                k,
                "tenant {t}"
            );
        }
    }

    #[test]
    fn rotation_rewraps_every_tenant_and_changes_the_master() {
        let (d, keys) = setup();
        let dir = d.path().join("keys");
        let before = fs::read(dir.join(MASTER_FILE)).unwrap();
        let r = rotate_master(&dir).unwrap();
        assert_eq!(r.tenants, 3);
        assert!(!r.resumed);
        assert_ne!(r.old_key_id, r.new_key_id);
        assert_ne!(fs::read(dir.join(MASTER_FILE)).unwrap(), before);
        assert!(!dir.join(MASTER_NEW_FILE).exists());
        for t in ["a", "b", "c"] {
            let f = read_tenant_file(&tenant_path(&dir, t), t).unwrap();
            assert_eq!(f.master_key_id, r.new_key_id);
            assert!(!staged(&tenant_path(&dir, t)).exists());
        }
        check(&dir, &keys);
        assert_eq!(Keyring::open(&dir).unwrap().master_key_id(), r.new_key_id);
    }

    #[test]
    fn a_crash_at_every_point_leaves_every_key_openable_and_the_next_run_finishes() {
        let (d0, _) = setup();
        let mut points = 0;
        rotate_until(&d0.path().join("keys"), &mut |_| {
            points += 1;
            false
        })
        .unwrap();
        // 1 (master.new) + 3 staged + 3 renamed + 1 (master renamed).
        assert_eq!(points, 8);
        for stop in 0..points {
            let (d, keys) = setup();
            let dir = d.path().join("keys");
            rotate_until(&dir, &mut |p| p == stop).unwrap();
            check(&dir, &keys);
            // A tenant created mid-rotation also survives the resumed rotation.
            let late = Keyring::open(&dir).unwrap().tenant("late").unwrap();
            let late_k = late.derive("layer", "n");
            let r = rotate_master(&dir).unwrap();
            assert_eq!(r.resumed, stop < points - 1, "stop {stop}");
            check(&dir, &keys);
            let again = Keyring::open(&dir).unwrap();
            assert_eq!(again.tenant("late").unwrap().derive("layer", "n"), late_k);
            assert!(!dir.join(MASTER_NEW_FILE).exists());
        }
    }

    #[test]
    fn a_keyring_opened_before_a_rotation_still_opens_tenants_after_it() {
        let (d, keys) = setup();
        let dir = d.path().join("keys");
        let ring = Keyring::open(&dir).unwrap();
        rotate_master(&dir).unwrap();
        for (t, k) in &keys {
            assert_eq!(&ring.tenant(t).unwrap().derive("volume", "v1"), k);
        }
    }
}
