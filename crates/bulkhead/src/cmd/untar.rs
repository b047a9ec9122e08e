//! Unpacking a tree downloaded from a node (`vm cp NODE:/dir DEST`) on the client.
//!
//! The tar comes from a node whose tenant may be hostile, so it is treated as untrusted input:
//! every entry is written through `tar`'s `unpack_in`, which skips entries with `..`, strips
//! leading `/`, and refuses to create anything whose parent resolves outside `DEST` (a symlink
//! unpacked earlier cannot redirect a later entry); regular files replace whatever is at their
//! path instead of writing through it. Set-id bits and ownership are not restored.
//!
//! Symlinks are recreated as they are in the node (as `tar` and Slicer do), which leaves links
//! to the node's absolute paths pointing at the client's own files: the CLI never follows them,
//! and says on stderr how many point outside `DEST`. `--no-symlinks` skips them instead.

use anyhow::Context;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Entries written.
    pub written: usize,
    /// Symlinks skipped (`--no-symlinks`): `path -> target`.
    pub skipped_links: Vec<String>,
    /// Symlinks recreated whose target lies outside the destination: `path -> target`.
    pub outside_links: Vec<String>,
    /// Entries refused because their path leaves the destination (`..`).
    pub refused: Vec<String>,
}

/// Whether `target`, as a link at `link` (relative to the destination), resolves outside it.
fn leaves(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Unpacks `tar` into `dst` (which must exist).
pub fn unpack(tar: &[u8], dst: &Path, no_symlinks: bool) -> anyhow::Result<Unpacked> {
    let mut out = Unpacked::default();
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    // Directories last (deepest first), as `Archive::unpack` does, so that a read-only
    // directory does not stop its own files.
    let mut dirs = Vec::new();
    for entry in archive.entries().context("reading the tar stream")? {
        let mut e = entry.context("reading the tar stream")?;
        let path: PathBuf = e.path().context("an entry has an unreadable path")?.into();
        let kind = e.header().entry_type();
        if kind.is_symlink() {
            let target: PathBuf = e
                .link_name()
                .context("a symlink has an unreadable target")?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let shown = format!("{} -> {}", path.display(), target.display());
            if no_symlinks {
                out.skipped_links.push(shown);
                continue;
            }
            if leaves(&path, &target) {
                out.outside_links.push(shown);
            }
        }
        if kind.is_dir() {
            dirs.push(e);
            continue;
        }
        if e.unpack_in(dst)
            .with_context(|| format!("unpacking {}", path.display()))?
        {
            out.written += 1;
        } else {
            out.refused.push(path.display().to_string());
        }
    }
    dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in dirs {
        let path = d
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if d.unpack_in(dst)
            .with_context(|| format!("unpacking {path}"))?
        {
            out.written += 1;
        } else {
            out.refused.push(path);
        }
    }
    Ok(out)
}

/// Tells the user what was skipped, refused, or recreated pointing outside `dst`.
pub fn report(u: &Unpacked, dst: &str) {
    const SHOW: usize = 5;
    for p in u.refused.iter().take(SHOW) {
        eprintln!("bulkhead: refused {p}: its path leaves {dst}");
    }
    for l in u.skipped_links.iter().take(SHOW) {
        eprintln!("bulkhead: skipped symlink {l} (--no-symlinks)");
    }
    if u.skipped_links.len() > SHOW {
        eprintln!(
            "bulkhead: skipped {} more symlinks",
            u.skipped_links.len() - SHOW
        );
    }
    if !u.outside_links.is_empty() {
        eprintln!(
            "bulkhead: note: {} symlink(s) from the node point outside {dst} and now point at \
             this machine's files (e.g. {}); they were recreated as they are in the node, not \
             followed. --no-symlinks skips symlinks.",
            u.outside_links.len(),
            u.outside_links[0]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path, kind, link target, contents.
    type Entry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    fn tar_of(entries: &[Entry]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644 | if kind.is_dir() { 0o111 } else { 0 });
            h.set_size(data.len() as u64);
            // Raw names: set_path refuses `..`, and an attacker's tar has them.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                let l = h.as_old_mut().linkname.as_mut();
                l[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn files_under(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn symlinks_never_lead_writes_outside_the_destination() {
        use tar::EntryType as T;
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "untouched").unwrap();
        let o = outside.to_str().unwrap();
        let victim = format!("{o}/victim");
        let attacks: Vec<Vec<Entry>> = vec![
            vec![
                ("sub", T::Symlink, o, b""),
                ("sub/planted", T::Regular, "", b"evil"),
            ],
            vec![
                ("v", T::Symlink, &victim, b""),
                ("v", T::Regular, "", b"evil"),
            ],
            vec![
                ("v", T::Symlink, &victim, b""),
                ("v", T::Directory, "", b""),
            ],
            vec![("../escaped", T::Regular, "", b"evil")],
            vec![("/abs-escaped", T::Regular, "", b"evil")],
            vec![("h", T::Link, &victim, b"")],
            vec![
                ("s", T::Symlink, o, b""),
                ("s/deeper/x", T::Regular, "", b"evil"),
            ],
        ];
        for (i, a) in attacks.iter().enumerate() {
            let dst = root.path().join(format!("dst{i}"));
            std::fs::create_dir(&dst).unwrap();
            let r = unpack(&tar_of(a), &dst, false);
            // Whatever the unpacker makes of it, nothing outside the destination changes.
            assert_eq!(files_under(&outside), vec!["victim"], "attack {i}: {r:?}");
            assert_eq!(
                std::fs::read_to_string(outside.join("victim")).unwrap(),
                "untouched",
                "attack {i}: {r:?}"
            );
            let mut top = files_under(root.path());
            top.retain(|f| !f.starts_with("dst"));
            assert_eq!(top, vec!["outside"], "attack {i}: {r:?}");
            // An absolute path lands inside, stripped of its `/`.
            if i == 4 {
                assert!(dst.join("abs-escaped").exists());
            }
        }
    }

    #[test]
    fn links_are_kept_noted_or_skipped() {
        use tar::EntryType as T;
        let tar = tar_of(&[
            ("d", T::Directory, "", b""),
            ("d/a.txt", T::Regular, "", b"a"),
            ("d/rel", T::Symlink, "a.txt", b""),
            ("d/abs", T::Symlink, "/etc/passwd", b""),
            ("d/up", T::Symlink, "../../x", b""),
        ]);
        let dst = tempfile::tempdir().unwrap();
        let u = unpack(&tar, dst.path(), false).unwrap();
        assert_eq!(
            u.outside_links,
            vec!["d/abs -> /etc/passwd", "d/up -> ../../x"]
        );
        assert_eq!(
            std::fs::read_to_string(dst.path().join("d/rel")).unwrap(),
            "a"
        );
        assert_eq!(
            std::fs::read_link(dst.path().join("d/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        let dst = tempfile::tempdir().unwrap();
        let u = unpack(&tar, dst.path(), true).unwrap();
        assert_eq!(u.skipped_links.len(), 3);
        assert_eq!(files_under(&dst.path().join("d")), vec!["a.txt"]);
    }

    #[test]
    fn link_targets_that_leave() {
        assert!(leaves(Path::new("a"), Path::new("/x")));
        assert!(leaves(Path::new("a"), Path::new("../x")));
        assert!(!leaves(Path::new("d/a"), Path::new("../x")));
        assert!(leaves(Path::new("d/a"), Path::new("../../x")));
        assert!(!leaves(Path::new("a"), Path::new("b/../c")));
    }
}
