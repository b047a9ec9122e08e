//! Removing commits: a delete's wipe of one commit, and the start-time sweep of what no row
//! explains (#13 commit and fork). Every image is wiped once no loop device backs it
//! (`image::wipe_image`); every tree of an earlier version as a tree (no symlink followed).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::image::wipe_image;
use super::{commits_dir, images_dir, sealed_path, wipe_file, wipe_tree};

/// Wipes everything of commit `id`: its sealed file and every image (or earlier version's
/// tree) of it.
pub fn remove(tenant_dir: &Path, id: &str) {
    for t in trees_of(tenant_dir, id) {
        wipe_entry(&t);
    }
    wipe_file(&sealed_path(tenant_dir, id));
}

/// An image (once no loop device backs it), or a directory (an earlier version's tree).
fn wipe_entry(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => wipe_tree(p),
        Ok(_) => wipe_image(p),
        Err(_) => {}
    }
}

fn trees_of(tenant_dir: &Path, id: &str) -> Vec<PathBuf> {
    let prefix = format!("commit-{id}-");
    fs::read_dir(images_dir(tenant_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// What a start-time sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub partial: usize,
    pub orphans: usize,
    /// Plaintext trees of an earlier version, of commits no node was made from.
    pub legacy: usize,
}

/// At start, before anything is served: wipes every commit file or image that `known` (the
/// ids with a row) does not explain, every partial one (a daemon killed mid-commit), and the
/// plaintext trees an earlier version kept, but those of commits in `in_use` (a node made
/// from the commit may run on it; they go with the commit).
pub fn sweep(tenant_dir: &Path, known: &HashSet<String>, in_use: &HashSet<String>) -> Swept {
    let mut s = Swept::default();
    for e in fs::read_dir(commits_dir(tenant_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        match name.strip_suffix(".sealed") {
            Some(id) if known.contains(id) => {}
            Some(_) => {
                s.orphans += 1;
                wipe_file(&e.path());
            }
            None => {
                s.partial += 1;
                wipe_file(&e.path());
            }
        }
    }
    for e in fs::read_dir(images_dir(tenant_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.file_type().is_ok_and(|t| t.is_dir());
        if name.starts_with(".commit-") {
            s.partial += 1;
            wipe_entry(&e.path());
        } else if let Some(rest) = name.strip_prefix("commit-") {
            let id = rest.split('-').next().unwrap_or_default();
            if !known.contains(id) {
                s.orphans += 1;
                wipe_entry(&e.path());
            } else if dir && !in_use.contains(id) {
                s.legacy += 1;
                wipe_tree(&e.path());
            }
        }
    }
    s
}
