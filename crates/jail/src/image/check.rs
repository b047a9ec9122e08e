//! What makes a tree a bulkhead image, checked before it is installed: a root file system
//! (not, say, a tarball of the directory that holds one), whose `/bin/sh`, if any, runs on this
//! host's architecture. The agent needs nothing of the image (it is a static binary the node
//! gets from its driver), so a distroless tree is an image too; what it misses for common
//! clients is reported as warnings: no `/bin/sh` (Slicer's shell, user data), no `/bin/bash`
//! (E2B runs every command as `/bin/bash -l -c`), no `user` account (E2B's default user; its
//! commands then run as root).
//!
//! Paths are resolved inside the tree (absolute symlinks re-rooted, `..` clamped at the root),
//! never on the host.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::store::err;
use crate::JailError;

/// Top-level directories of which a root file system has at least one.
const ROOT_DIRS: [&str; 6] = ["bin", "etc", "lib", "sbin", "usr", "var"];

/// Checks a staged tree; returns warnings about what common clients will miss.
pub fn rootfs(root: &Path) -> Result<Vec<String>, JailError> {
    let top: Vec<String> = fs::read_dir(root)
        .map_err(|e| err(format!("reading {}: {e}", root.display())))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !top.iter().any(|n| ROOT_DIRS.contains(&n.as_str())) {
        let hint = match top.as_slice() {
            [] => "it is empty".to_string(),
            [one] => format!("it holds only {one:?}: archive the root file system's contents (`tar -C DIR -cf x.tar .`), not the directory"),
            _ => format!("its top level is {}", top.join(", ")),
        };
        return Err(err(format!(
            "not a root file system (none of /{} at its top): {hint}",
            ROOT_DIRS.join(", /")
        )));
    }
    let mut warnings = Vec::new();
    match resolve(root, "/bin/sh") {
        Some(sh) if sh.is_file() => {
            if let Some(m) = elf_machine(&sh) {
                if m != HOST_MACHINE {
                    return Err(err(format!(
                        "/bin/sh is an ELF binary for machine {m} ({}), and this host runs {} ({HOST_MACHINE}): import the image built for {}",
                        machine_name(m),
                        machine_name(HOST_MACHINE),
                        std::env::consts::ARCH
                    )));
                }
            }
        }
        _ => warnings.push(
            "the image has no /bin/sh: exec with a shell, Slicer's shell and user data need one"
                .to_string(),
        ),
    }
    if !resolve(root, "/bin/bash").is_some_and(|p| p.is_file()) {
        warnings.push(
            "the image has no /bin/bash: E2B runs every command as `/bin/bash -l -c`".to_string(),
        );
    }
    if !has_user(root) {
        warnings.push(
            "the image has no account `user` with /home/user: E2B commands run as root in it"
                .to_string(),
        );
    }
    Ok(warnings)
}

/// `user` in the tree's /etc/passwd, with its home directory present.
fn has_user(root: &Path) -> bool {
    let passwd = resolve(root, "/etc/passwd")
        .and_then(|p| fs::read_to_string(p).ok())
        .unwrap_or_default();
    passwd.lines().any(|l| l.starts_with("user:"))
        && resolve(root, "/home/user").is_some_and(|p| p.is_dir())
}

/// `path` resolved inside `root` (symlinks followed within the tree, at most 40); `None` when
/// a component is missing or the links loop.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = components(path);
    todo.reverse();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let here = done
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        let md = fs::symlink_metadata(&here).ok()?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = fs::read_link(&here).ok()?;
            let t = target.to_string_lossy();
            if t.starts_with('/') {
                done.clear();
            }
            let mut more = components(&t);
            more.reverse();
            todo.extend(more);
        } else {
            done.push(c);
        }
    }
    Some(done.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

fn components(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = 62;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = 183;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const HOST_MACHINE: u16 = 0;

fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "x86",
        40 => "arm",
        62 => "x86-64",
        183 => "aarch64",
        243 => "riscv",
        _ => "another architecture",
    }
}

/// The ELF `e_machine` of a file, `None` when it is not ELF (a script).
fn elf_machine(p: &Path) -> Option<u16> {
    let mut b = [0u8; 20];
    fs::File::open(p).ok()?.read_exact(&mut b).ok()?;
    (&b[..4] == b"\x7fELF").then(|| u16::from_le_bytes([b[18], b[19]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        symlink("usr/bin", d.path().join("bin")).unwrap();
        d
    }

    #[test]
    fn paths_resolve_inside_the_tree() {
        let d = tree();
        let r = d.path();
        fs::write(r.join("usr/bin/dash"), "#!x").unwrap();
        symlink("/bin/dash", r.join("usr/bin/sh")).unwrap();
        symlink("../../../../etc/passwd", r.join("usr/bin/up")).unwrap();
        symlink("loop", r.join("usr/bin/loop")).unwrap();
        fs::write(r.join("etc/passwd"), "").unwrap();
        assert_eq!(resolve(r, "/bin/sh"), Some(r.join("usr/bin/dash")));
        // `..` past the root stays at the root: this is the tree's /etc/passwd, not the host's.
        assert_eq!(resolve(r, "/bin/up"), Some(r.join("etc/passwd")));
        assert_eq!(resolve(r, "/bin/loop"), None);
        assert_eq!(resolve(r, "/nope/x"), None);
    }

    #[test]
    fn a_tree_without_a_shell_or_bash_warns() {
        let d = tree();
        let w = rootfs(d.path()).unwrap();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("/bin/sh") && w[1].contains("/bin/bash") && w[2].contains("user"));
        fs::write(d.path().join("usr/bin/sh"), "#!/x\n").unwrap();
        fs::write(d.path().join("usr/bin/bash"), "#!/x\n").unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "user:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        fs::create_dir_all(d.path().join("home/user")).unwrap();
        assert!(rootfs(d.path()).unwrap().is_empty());
    }

    #[test]
    fn not_a_root_file_system_says_why() {
        let d = tempfile::tempdir().unwrap();
        let e = rootfs(d.path()).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        fs::create_dir_all(d.path().join("rootfs/etc")).unwrap();
        let e = rootfs(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("holds only \"rootfs\"") && e.contains("tar -C"),
            "{e}"
        );
    }

    #[test]
    fn a_shell_for_another_machine_is_refused() {
        let d = tree();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        let other: u16 = if HOST_MACHINE == 183 { 62 } else { 183 };
        elf[18..20].copy_from_slice(&other.to_le_bytes());
        fs::write(d.path().join("usr/bin/sh"), &elf).unwrap();
        let e = rootfs(d.path()).unwrap_err().to_string();
        assert!(e.contains("/bin/sh is an ELF binary for machine"), "{e}");
        elf[18..20].copy_from_slice(&HOST_MACHINE.to_le_bytes());
        fs::write(d.path().join("usr/bin/sh"), &elf).unwrap();
        assert!(rootfs(d.path()).is_ok());
    }
}
