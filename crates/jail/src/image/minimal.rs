//! The `minimal` image: the host's statically linked busybox with its applets as symlinks,
//! root and the unprivileged account `user` (uid 1000, gid 1000, home `/home/user`), and a
//! `/bin/bash` that is busybox's ash, so that E2B's `/bin/bash -l -c CMD` runs (busybox has
//! no `bash` applet; a missing /etc/profile is no error for `-l`). Nothing is downloaded.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::install::{install, Origin};
use super::store::{err, ioe, meta, ImageMeta, StoreLock};
use super::users;
use crate::JailError;

/// `/bin/bash` in `minimal`: busybox's ash under bash's name. `$0` is `ash`, and ash is no
/// bash (no arrays, no `[[`); scripts that need bash want the `debian` image.
const BASH: &str = "#!/bin/busybox sh\n# bulkhead minimal: bash is busybox's ash (E2B runs `/bin/bash -l -c CMD`)\nexec /bin/busybox ash \"$@\"\n";

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// What `minimal` holds, as recorded in its `image.json`: raised whenever the recipe changes,
/// so that daemons rebuild an older `minimal` (2: `/bin/bash` and the account `user`).
pub const RECIPE: &str = "minimal/2";

/// Whether `minimal` exists and was made by this recipe.
fn current(state: &Path) -> bool {
    meta(state, "minimal").is_some_and(|m| m.recipe.as_deref() == Some(RECIPE))
}

/// Builds `minimal` unless it exists from this recipe (an older one is rebuilt: tenants get
/// the new tree at their daemon's next start); safe when several daemons start at once.
pub fn ensure_minimal(state: &Path, busybox: &Path) -> Result<(), JailError> {
    if current(state) {
        return Ok(());
    }
    let lock = StoreLock::take(state, true)?;
    if current(state) {
        return Ok(());
    }
    drop(lock);
    build_minimal(state, busybox).map(|_| ())
}

/// Builds the `minimal` image from the host's statically linked busybox.
pub fn build_minimal(state: &Path, busybox: &Path) -> Result<ImageMeta, JailError> {
    let bytes = fs::read(busybox).map_err(|e| {
        err(format!(
            "cannot read {}: {e}; install it with `apt-get install busybox-static`",
            busybox.display()
        ))
    })?;
    if !is_static_elf(&bytes) {
        return Err(err(format!(
            "{} is dynamically linked; images may have no libc: install busybox-static",
            busybox.display()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(err(
            "building `minimal` needs root: its files belong to root and to the account user (uid 1000)",
        ));
    }
    let list = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| err(format!("running {} --list-full: {e}", busybox.display())))?;
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    let origin = Origin {
        source: format!("busybox {}", busybox.display()),
        recipe: Some(RECIPE.into()),
    };
    install(state, "minimal", origin, |root| {
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev",
            "var/tmp", "home", "work",
        ] {
            fs::create_dir_all(root.join(d)).map_err(ioe(d))?;
        }
        fs::write(root.join("bin/busybox"), &bytes).map_err(ioe("copying busybox"))?;
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))
            .map_err(ioe("chmod busybox"))?;
        for applet in applets
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains(".."))
        {
            let p = root.join(applet);
            if p.exists() || applet == "bin/busybox" {
                continue;
            }
            let depth = applet.matches('/').count();
            let target = format!("{}bin/busybox", "../".repeat(depth));
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).map_err(ioe("applet dir"))?;
            }
            symlink(target, &p).map_err(ioe(format!("linking {applet}")))?;
        }
        // Written, not linked to busybox (which has no `bash` applet); never written
        // through a link of that name.
        let _ = fs::remove_file(root.join("bin/bash"));
        for (f, content) in [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
            ("bin/bash", BASH),
            (
                "etc/os-release",
                "NAME=\"bulkhead minimal\"\nID=bulkhead-minimal\n",
            ),
            ("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
        ] {
            fs::write(root.join(f), content).map_err(ioe(f))?;
        }
        for d in ["tmp", "var/tmp"] {
            fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o1777))
                .map_err(ioe(d))?;
        }
        fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))
            .map_err(ioe("root"))?;
        fs::set_permissions(root.join("bin/bash"), fs::Permissions::from_mode(0o755))
            .map_err(ioe("chmod /bin/bash"))?;
        users::add_user(root, "/bin/sh")
    })
    .map(|(m, _)| m)
}

fn is_static_elf(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(b[54..56].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(b[56..58].try_into().unwrap()) as usize;
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        // PT_INTERP (3) names a dynamic loader.
        b.get(off..off + 4)
            .map(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::super::{image_dir, list};
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The tree `minimal` is: bash that is ash, root and `user` with its home (needs root, as
    /// the build does).
    #[test]
    fn minimal_has_bash_and_the_user_account() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !Path::new(BUSYBOX).exists() {
            eprintln!("skipped: building minimal needs root and {BUSYBOX}");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let m = build_minimal(state.path(), Path::new(BUSYBOX)).unwrap();
        assert_eq!(m.recipe.as_deref(), Some(RECIPE));
        let root = image_dir(state.path(), "minimal").join("rootfs");
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("\nuser:x:1000:1000:user:/home/user:/bin/sh\n"),
            "{passwd}"
        );
        assert!(fs::read_to_string(root.join("etc/group"))
            .unwrap()
            .contains("\nuser:x:1000:\n"));
        let home = fs::metadata(root.join("home/user")).unwrap();
        assert_eq!(
            (home.uid(), home.gid(), home.mode() & 0o777),
            (1000, 1000, 0o755)
        );
        let bash = fs::symlink_metadata(root.join("bin/bash")).unwrap();
        assert!(bash.is_file() && bash.mode() & 0o111 != 0);
        // It runs what E2B sends, with no /etc/profile (run on the host: the same busybox).
        let out = std::process::Command::new(root.join("bin/bash"))
            .args(["-l", "-c", "echo \"$0:$((1+1))\""])
            .env_clear()
            .env("HOME", "/nonexistent")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ash:2\n");
        // An older minimal is rebuilt; a current one is kept.
        ensure_minimal(state.path(), Path::new(BUSYBOX)).unwrap();
        assert_eq!(meta(state.path(), "minimal").unwrap().id, m.id);
        let json = image_dir(state.path(), "minimal").join("image.json");
        let mut old = meta(state.path(), "minimal").unwrap();
        old.recipe = None;
        fs::write(&json, serde_json::to_vec(&old).unwrap()).unwrap();
        ensure_minimal(state.path(), Path::new(BUSYBOX)).unwrap();
        let now = meta(state.path(), "minimal").unwrap();
        assert_ne!(now.id, m.id);
        assert_eq!(now.recipe.as_deref(), Some(RECIPE));
    }

    #[test]
    fn minimal_needs_a_static_busybox() {
        let state = tempfile::tempdir().unwrap();
        let e = build_minimal(state.path(), Path::new("/nonexistent/busybox"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("busybox-static"), "{e}");
        // Any dynamically linked binary of the host stands in for a non-static busybox.
        let dynamic = ["/bin/ls", "/usr/bin/ls"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .unwrap();
        let e = build_minimal(state.path(), dynamic)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        assert!(list(state.path()).is_empty());
    }
}
