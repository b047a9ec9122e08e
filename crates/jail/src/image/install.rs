//! Installing an image: a staging directory filled by a recipe or an import, sanitized,
//! checked and renamed into place under the store's exclusive lock ([`install`]), and the
//! import of a directory, tarball, OCI layout or archive ([`import`]).

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::store::{
    copy_tree, err, image_dir, ioe, new_id, now, validate_name, ImageMeta, StoreLock,
};
use super::{check, oci, scratch};
use crate::JailError;

/// Where an image comes from, as `install` records it.
pub(crate) struct Origin {
    pub source: String,
    pub recipe: Option<String>,
}

/// Builds the tree in a staging directory with `fill`, cleans and checks it, then swaps it
/// into place, so a failed build never leaves a half-made image under the name. Only the swap
/// holds the store's exclusive lock: a long build (debootstrap) never keeps daemons from
/// copying other images. Returns the image and the check's warnings.
pub(crate) fn install(
    state: &Path,
    name: &str,
    origin: Origin,
    fill: impl FnOnce(&Path) -> Result<(), JailError>,
) -> Result<(ImageMeta, Vec<String>), JailError> {
    validate_name(name)?;
    let images = state.join("images");
    fs::create_dir_all(&images).map_err(ioe(format!("creating {}", images.display())))?;
    fs::set_permissions(&images, fs::Permissions::from_mode(0o755)).map_err(ioe("chmod images"))?;
    scratch::sweep(&images);
    let tmp = scratch::Staging::new(&images, name)?;
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(&rootfs).map_err(ioe("creating build directory"))?;
    let meta = ImageMeta {
        name: name.into(),
        id: new_id(),
        source: origin.source,
        created_at: now(),
        recipe: origin.recipe,
    };
    fill(&rootfs)?;
    scratch::sanitize(&rootfs)?;
    let warnings = check::rootfs(&rootfs)?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)).map_err(ioe("chmod rootfs"))?;
    fs::write(
        tmp.path().join("image.json"),
        serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )
    .map_err(ioe("writing image.json"))?;
    let lock = StoreLock::take(state, true)?;
    let dst = image_dir(state, name);
    let mut old = None;
    if dst.exists() {
        let o = images.join(format!(".{name}.old-{}", new_id()));
        fs::rename(&dst, &o).map_err(ioe("replacing image"))?;
        old = Some(o);
    }
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).map_err(ioe("chmod"))?;
    if let Err(e) = fs::rename(tmp.path(), &dst) {
        // Put the previous image back rather than leave none.
        if let Some(o) = &old {
            let _ = fs::rename(o, &dst);
        }
        return Err(err(format!("installing image: {e}")));
    }
    tmp.keep();
    // The replaced tree goes after the lock: removing a large one never holds up tenant copies.
    drop(lock);
    if let Some(o) = old {
        let _ = fs::remove_dir_all(o);
    }
    Ok((meta, warnings))
}

/// Imports a root filesystem from a directory or a tar archive (plain or gzip), or an OCI
/// image layout, OCI archive or docker archive ([`oci`]); `oci_ref` picks one image of a
/// layout or archive that holds several. Returns the image and the check's warnings.
pub fn import(
    state: &Path,
    name: &str,
    src: &Path,
    oci_ref: Option<&str>,
) -> Result<(ImageMeta, Vec<String>), JailError> {
    let md = fs::metadata(src).map_err(|e| err(format!("cannot read {}: {e}", src.display())))?;
    let kind = oci::Kind::detect(src, &md)?;
    if oci_ref.is_some() && kind == oci::Kind::Rootfs {
        return Err(err(format!(
            "--ref picks an image of an OCI layout or archive, and {} is a plain root filesystem",
            src.display()
        )));
    }
    let origin = Origin {
        source: match kind {
            oci::Kind::Rootfs => src.display().to_string(),
            k => format!("{} {}", k.transport(), src.display()),
        },
        recipe: None,
    };
    if kind != oci::Kind::Rootfs {
        return install(state, name, origin, |root| {
            oci::unpack(kind, src, oci_ref, root)
        });
    }
    install(state, name, origin, |root| {
        if md.is_dir() {
            copy_tree(src, root, &|uid, gid| (uid, gid))
        } else {
            let mut f = fs::File::open(src).map_err(ioe(src.display()))?;
            let mut magic = [0u8; 2];
            let n = f.read(&mut magic).map_err(ioe(src.display()))?;
            let f = fs::File::open(src).map_err(ioe(src.display()))?;
            let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
                Box::new(flate2::read::GzDecoder::new(f))
            } else {
                Box::new(f)
            };
            let mut a = tar::Archive::new(reader);
            a.set_preserve_permissions(true);
            a.set_preserve_ownerships(true);
            a.unpack(root).map_err(|e| {
                // tar's error says which entry; its source says why.
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why = format!("{why}: {c}");
                    cause = c.source();
                }
                err(format!(
                    "unpacking {}: {why} (give a directory, a .tar or a .tar.gz)",
                    src.display()
                ))
            })
        }
    })
}
