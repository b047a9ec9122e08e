//! What a start prepares on the host before a tenant opens: the host's figures, the tenant's
//! claim on its uid range in the host-wide registry, the companion binaries beside `bulkhead`,
//! the agent installed in the tenant's state, and the default image.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::fsutil::ensure_dir;
use crate::start_error::{io, StartError};

/// Host-wide registry of claimed uid ranges, shared by every daemon on the host.
pub const UID_REGISTRY: &str = "/run/bulkhead/uid-ranges";

/// What this host can give a node: `MemTotal`, the CPUs this process may use (affinity and
/// cgroup quota), and the size of the filesystem that holds `state_dir` (or of its nearest
/// existing ancestor). A figure that cannot be read is not checked against.
pub fn host_facts(state_dir: &Path) -> bulkhead_core::HostFacts {
    let mem_total_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| bulkhead_core::host::parse_meminfo(&t))
        .unwrap_or(u64::MAX);
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(u32::MAX);
    let state_fs_bytes = state_dir.ancestors().find_map(|d| {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(d.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
            .then(|| (st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
    });
    bulkhead_core::HostFacts {
        mem_total_bytes,
        cpus,
        state_fs_bytes,
    }
}

/// A claimed uid range; the claim is released when the daemon stops or fails to start. After
/// a crash it stays, which is harmless: only the same tenant can take it again.
pub(crate) struct UidClaim(PathBuf);

impl Drop for UidClaim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Claims the tenant's uid range in the host-wide registry.
pub(crate) fn claim_uid_range(tenant: &str, base: u32) -> Result<UidClaim, StartError> {
    std::fs::create_dir_all(UID_REGISTRY).map_err(io(format!("creating {UID_REGISTRY}")))?;
    let p = Path::new(UID_REGISTRY).join(base.to_string());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
    {
        Ok(_) => std::fs::write(&p, tenant).map_err(io("claiming uid range"))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let owner = std::fs::read_to_string(&p).unwrap_or_default();
            if owner.trim() != tenant {
                return Err(StartError::Refused(format!(
                    "tenant {tenant:?} maps to host uids {base}.. which tenant {:?} already holds: rename one of the tenants",
                    owner.trim()
                )));
            }
        }
        Err(e) => return Err(io("claiming uid range")(e)),
    }
    Ok(UidClaim(p))
}

/// `bulkhead-agent` and `bulkhead-supervisor` ship beside `bulkhead`.
pub(crate) fn companion(self_exe: &Path, name: &str) -> Result<PathBuf, StartError> {
    let p = self_exe.with_file_name(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(StartError::Refused(format!(
            "{} is missing: install {name} beside bulkhead",
            p.display()
        )))
    }
}

/// Installs the agent binary into the tenant's state: a hard link when the state directory
/// shares a filesystem with it, else a copy. Nodes bind-mount this file, so a rebuilt or
/// upgraded bulkhead never changes the agent under a running node.
pub(crate) fn install_agent(tenant_dir: &Path, source: &Path) -> Result<PathBuf, StartError> {
    use std::os::unix::fs::MetadataExt;
    let dir = tenant_dir.join("bin");
    ensure_dir(&dir, 0o711).map_err(io("creating bin directory"))?;
    let dst = dir.join("bulkhead-agent");
    let ours = std::fs::metadata(source).map_err(io(format!("reading {}", source.display())))?;
    if let Ok(theirs) = std::fs::metadata(&dst) {
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Ok(dst);
        }
    }
    let tmp = dir.join(".bulkhead-agent.tmp");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(source, &tmp).is_err() {
        std::fs::copy(source, &tmp).map_err(io("writing agent binary"))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(io("chmod agent"))?;
    }
    std::fs::rename(&tmp, &dst).map_err(io("installing agent binary"))?;
    Ok(dst)
}

/// Makes sure the configured image exists, building `minimal` from busybox-static if needed.
pub fn ensure_image(state_root: &Path, name: &str) -> Result<(), StartError> {
    if bulkhead_jail::image::meta(state_root, name).is_some() {
        return Ok(());
    }
    if name == bulkhead_core::config::DEFAULT_IMAGE {
        tracing::info!(
            "building the minimal image from {}",
            bulkhead_jail::image::BUSYBOX
        );
        bulkhead_jail::image::ensure_minimal(state_root, Path::new(bulkhead_jail::image::BUSYBOX))?;
        return Ok(());
    }
    // #15 E: the debian recipe is named, other images are imported.
    let how = match name {
        "debian" => "build it with `bulkhead image build debian`".to_string(),
        _ => format!("import it with `bulkhead image import --name {name} DIR|TARBALL|OCI-LAYOUT|OCI-ARCHIVE`"),
    };
    Err(StartError::Refused(format!(
        "image {name:?} not found in {}: {how}",
        state_root.display()
    )))
}
