//! The image store. An image is a read-only root filesystem tree under
//! `<state>/images/<name>/rootfs` with an `image.json` beside it. Images come from recipes
//! (`minimal` from the host's busybox-static, [`minimal`]; `debian` with debootstrap from the
//! mirror the host's apt uses, [`debian`]) or are imported from a directory, a tarball, an OCI
//! image layout or an OCI/docker archive ([`oci`], with skopeo and umoci). Nothing else is
//! downloaded.
//!
//! Invariants: an image is built in a staging directory (`images/.<name>.tmp-<pid>-<id>`,
//! mode 0700 while it is filled, so device nodes a build or an archive makes are never
//! reachable by host users), cleaned of everything but directories, regular files and
//! symlinks, checked ([`check`]), and only then renamed into place under the store's
//! exclusive lock; a failed build's staging is wiped (`bulkhead_storage::wipe`), and a later
//! build wipes the staging of a build whose process is gone.
//!
//! Nodes do not use the store's tree directly: each tenant gets a copy whose owners are shifted
//! into the tenant's host uid range ([`shifted_copy`]), so that uid 0 in the node owns the
//! node's files while being an unprivileged uid on the host.

pub mod check;
pub mod debian;
mod install;
pub mod minimal;
pub mod oci;
mod scratch;
mod store;
mod users;

pub use install::import;
pub use minimal::{build_minimal, ensure_minimal, BUSYBOX};
pub use store::{image_dir, list, meta, validate_name, ImageMeta, StoreLock};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::JailError;
use store::{copy_tree, err, ioe, new_id};

/// The owner map of a tenant's image trees: every id shifted by `base`; ids at or above
/// `count` become the range's nobody.
pub fn shift(base: u32, count: u32) -> impl Fn(u32, u32) -> (u32, u32) {
    move |uid: u32, gid: u32| {
        let f = |x: u32| {
            if x < count {
                base + x
            } else {
                base + 65534.min(count - 1)
            }
        };
        (f(uid), f(gid))
    }
}

/// Returns the tenant's copy of an image, making it if needed: `<tenant_dir>/images/<id>`, with
/// every owner shifted by `base` (ids at or above `count` become the range's nobody).
pub fn shifted_copy(
    state: &Path,
    name: &str,
    tenant_dir: &Path,
    base: u32,
    count: u32,
) -> Result<PathBuf, JailError> {
    let _lock = StoreLock::take(state, false)?;
    let m = meta(state, name).ok_or_else(|| {
        err(format!("image {name:?} not found: build it with `bulkhead image build minimal|debian` or import one with `bulkhead image import --name {name} DIR|TARBALL|OCI-LAYOUT|OCI-ARCHIVE`"))
    })?;
    let dir = tenant_dir.join("images");
    let dst = dir.join(format!("{}-{}", m.name, m.id));
    if dst.exists() {
        return Ok(dst);
    }
    fs::create_dir_all(&dir).map_err(ioe(dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).map_err(ioe("chmod"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", m.id, new_id()));
    let res = copy_tree(
        &image_dir(state, name).join("rootfs"),
        &tmp,
        &shift(base, count),
    )
    .and_then(|_| fs::rename(&tmp, &dst).map_err(ioe("installing tenant image")));
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res.map(|_| dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn image_names() {
        assert!(validate_name("minimal").is_ok());
        assert!(validate_name("debian-12.1").is_ok());
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn import_and_shift_a_directory() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("etc")).unwrap();
        fs::write(src.path().join("etc/hello"), "hi").unwrap();
        symlink("hello", src.path().join("etc/link")).unwrap();
        let (m, warnings) = import(state.path(), "t", src.path(), None).unwrap();
        assert_eq!(m.name, "t");
        assert_eq!(
            warnings.len(),
            3,
            "no /bin/sh, /bin/bash, user: {warnings:?}"
        );
        assert_eq!(list(state.path()).len(), 1);
        let tenant = state.path().join("tenant");
        let out = shifted_copy(state.path(), "t", &tenant, 200_000, 65536).unwrap();
        let md = fs::metadata(out.join("etc/hello")).unwrap();
        let me = fs::metadata(src.path().join("etc/hello")).unwrap();
        if me.uid() == 0 {
            assert_eq!(md.uid(), 200_000);
        }
        assert_eq!(
            fs::read_link(out.join("etc/link")).unwrap(),
            Path::new("hello")
        );
        assert!(shifted_copy(state.path(), "missing", &tenant, 1, 1).is_err());
    }

    #[test]
    fn failed_import_leaves_nothing() {
        let state = tempfile::tempdir().unwrap();
        let bogus = state.path().join("not-a-tar");
        fs::write(
            &bogus,
            "definitely not tar data, but long enough to be read as a header....",
        )
        .unwrap();
        assert!(import(state.path(), "bad", &bogus, None).is_err());
        // A tarball of the directory that holds a root file system, not of its contents.
        let nested = state.path().join("nested.tar");
        let mut b = tar::Builder::new(fs::File::create(&nested).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, "rootfs/etc/passwd", &b"x\n"[..])
            .unwrap();
        b.finish().unwrap();
        drop(b);
        let e = import(state.path(), "nested", &nested, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a root file system") && e.contains("\"rootfs\""),
            "{e}"
        );
        let e = import(state.path(), "nested", &nested, Some("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ref"), "{e}");
        assert!(list(state.path()).is_empty());
        let leftovers: Vec<_> = fs::read_dir(state.path().join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != ".lock")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
