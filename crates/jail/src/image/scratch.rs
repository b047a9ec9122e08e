//! Staging and scratch space of image builds and imports (#13: scratch space used for image
//! imports is wiped): a [`Staging`] directory is wiped when dropped unless kept, the
//! staging of a build whose process is gone is wiped by the next build ([`sweep`]), and a
//! staged tree keeps only directories, regular files and symlinks ([`sanitize`]).
//!
//! Invariants: a staging directory is `.<name>.tmp-<pid>-<id>` (or `.scratch-<pid>-<id>`),
//! mode 0700, so what a build or an archive makes in it (device nodes, set-id files) is never
//! reachable by host users before it is cleaned; nothing is wiped while a mount point lies
//! under it (debootstrap runs in a mount namespace of its own, so none should; if one does,
//! the tree is left in place and named rather than followed into a host file system).

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::store::{err, ioe, new_id};
use crate::JailError;

/// A directory that is wiped when dropped, unless [`Staging::keep`] was called.
pub(crate) struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    /// `<dir>/.<name>.tmp-<pid>-<id>`, mode 0700.
    pub fn new(dir: &Path, name: &str) -> Result<Self, JailError> {
        let path = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), new_id()));
        fs::create_dir(&path).map_err(ioe(format!("creating {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .map_err(ioe(format!("chmod {}", path.display())))?;
        Ok(Staging { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory was renamed into place: nothing to wipe.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep && self.path.exists() {
            wipe(&self.path);
        }
    }
}

/// Wipes `dir` (overwriting its files) unless a mount point lies under it.
pub(crate) fn wipe(dir: &Path) {
    let mounted = mounts_under(dir);
    if !mounted.is_empty() {
        tracing::warn!(dir = %dir.display(), mounts = ?mounted, "not wiping a staging directory with mounts under it: unmount them and remove it");
        return;
    }
    if let Err(e) = bulkhead_storage::wipe::wipe_tree(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "wiping image scratch space failed; removing it");
        let _ = fs::remove_dir_all(dir);
    }
}

/// Mount points at or under `dir` in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let Ok(dir) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

/// Wipes the staging directories under `dir` whose builder process is gone.
pub(crate) fn sweep(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = staging_pid(&n) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        tracing::info!(dir = %e.path().display(), "wiping the staging of an image build that did not finish");
        wipe(&e.path());
    }
}

/// The builder's pid in a staging directory's name (`.<name>.tmp-<pid>-<id>`,
/// `.scratch-<pid>-<id>`).
fn staging_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let tail = match rest.rfind(".tmp-") {
        Some(i) => &rest[i + 5..],
        None => rest.strip_prefix("scratch-")?,
    };
    let (pid, id) = tail.split_once('-')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| pid.parse().ok())
        .flatten()
}

/// Removes from a staged tree everything but directories, regular files and symlinks: device
/// nodes, sockets and fifos (a node gets its devices from its driver, never from an image).
/// Symlinks are never followed. Returns how many entries went.
pub(crate) fn sanitize(root: &Path) -> Result<usize, JailError> {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(ioe(format!("reading {}", d.display())))? {
            let e = e.map_err(ioe(format!("reading {}", d.display())))?;
            let ft = e
                .file_type()
                .map_err(ioe(format!("inspecting {}", e.path().display())))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_socket() || ft.is_fifo()
            {
                fs::remove_file(e.path())
                    .map_err(ioe(format!("removing {}", e.path().display())))?;
                removed += 1;
            }
        }
    }
    if removed > 0 {
        tracing::debug!(
            removed,
            "removed device nodes, sockets and fifos from the image"
        );
    }
    Ok(removed)
}

/// Scratch space for an import's intermediate files (an OCI layout, an unpacked bundle).
pub(crate) fn scratch(images: &Path) -> Result<Staging, JailError> {
    let path = images.join(format!(".scratch-{}-{}", std::process::id(), new_id()));
    fs::create_dir(&path).map_err(|e| err(format!("creating {}: {e}", path.display())))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
        .map_err(ioe(format!("chmod {}", path.display())))?;
    Ok(Staging { path, keep: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_carry_the_builder() {
        assert_eq!(staging_pid(".debian.tmp-42-0123456789abcdef"), Some(42));
        assert_eq!(staging_pid(".my.image.tmp-7-0123456789abcdef"), Some(7));
        assert_eq!(staging_pid(".scratch-9-0123456789abcdef"), Some(9));
        for other in [
            ".lock",
            "debian",
            ".debian.old-0123456789abcdef",
            ".debian.tmp-0123456789abcdef",
            ".scratch-x-0123456789abcdef",
        ] {
            assert_eq!(staging_pid(other), None, "{other}");
        }
    }

    #[test]
    fn the_sweep_wipes_dead_builds_only() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(".x.tmp-999999999-0123456789abcdef");
        let live = d
            .path()
            .join(format!(".x.tmp-{}-0123456789abcdef", std::process::id()));
        let image = d.path().join("x");
        for p in [&dead, &live, &image] {
            fs::create_dir_all(p.join("rootfs/etc")).unwrap();
            fs::write(p.join("rootfs/etc/f"), "data").unwrap();
        }
        sweep(d.path());
        assert!(!dead.exists());
        assert!(live.exists() && image.exists());
    }

    #[test]
    fn sanitize_keeps_files_dirs_and_links_only() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/dev/null", d.path().join("a/link")).unwrap();
        nix::unistd::mkfifo(&d.path().join("a/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(d.path().join("a/b/sock")).unwrap();
        assert_eq!(sanitize(d.path()).unwrap(), 2);
        assert!(d.path().join("a/b/f").exists());
        assert!(fs::symlink_metadata(d.path().join("a/link")).is_ok());
        assert!(!d.path().join("a/fifo").exists());
    }

    #[test]
    fn a_dropped_staging_is_wiped_and_a_kept_one_stays() {
        let d = tempfile::tempdir().unwrap();
        let s = Staging::new(d.path(), "n").unwrap();
        let p = s.path().to_path_buf();
        fs::write(p.join("f"), "secret").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(s);
        assert!(!p.exists());
        let s = Staging::new(d.path(), "n").unwrap();
        let p = s.path().to_path_buf();
        s.keep();
        assert!(p.exists());
    }
}
