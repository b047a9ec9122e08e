//! What the cgroup modules share below them: the one error, the hierarchy's version and the
//! small file operations on a cgroup directory (a write naming its path, a v1 cpuset taking
//! its parent's CPUs and memory nodes, the v1 blkio weight file of this kernel).
//!
//! Invariant (v1): a cpuset accepts tasks only once its `cpuset.cpus` and `cpuset.mems` are set,
//! and each level's CPUs lie within its parent's: every level bulkhead creates copies its
//! parent's before anything else is written there.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy under {0}: need cgroup v2 with the memory, cpu and pids controllers, or v1 with cpu, memory, pids and freezer mounted")]
    NotFound(PathBuf),
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {0} still has processes after they were killed")]
    Busy(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The v1 blkio weight file this kernel offers (CFQ's or BFQ's), if any.
pub(crate) fn v1_blkio_weight_file(base: &Path) -> Option<&'static str> {
    ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|f| base.join(f).exists())
}

/// A v1 cpuset directory takes its parent's CPUs and memory nodes where it has none yet.
pub(crate) fn v1_cpuset_inherit(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if read_trim(&dir.join(f)).is_empty() {
            let v = read_trim(&parent.join(f));
            if !v.is_empty() {
                write(&dir.join(f), &v)?;
            }
        }
    }
    Ok(())
}
