//! The guest kernel, built locally from Debian's kernel package (no other download): the
//! package is given as a .deb, found in [`DEB_CACHE`] (where `scripts/setup.sh` puts it), or
//! fetched there with `apt-get download`; it is unpacked with `dpkg-deb`,
//! the uncompressed `vmlinux` cut out of its bzImage (the xz payload: microvm boots it directly
//! through its PVH note, no firmware), and the modules a guest needs copied out with their
//! dependencies. The initramfs is assembled per tenant from these modules and the tenant's
//! agent ([`initramfs`]).
//!
//! Layout: `<state>/kernels/<release>/{vmlinux, modules/*.ko, modules/order, kernel.json}`,
//! and `<state>/kernels/current` pointing at the newest build.

use crate::VmError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the guest loads, in order of need; dependencies are added before each.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "crc32c_generic",
    "ext4",
    // Containers inside a guest (and bulkhead's own jail driver there) need overlayfs.
    "overlay",
    // Encrypted volumes (#13, attach): fscrypt is built in, its algorithms are modules (the
    // guest has no modprobe to fetch them on demand): HKDF-SHA512 for the key, AES-256-XTS
    // for contents, AES-256-CTS-CBC for names.
    "sha512_generic",
    "ecb",
    "xts",
    "cts",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelInfo {
    pub release: String,
    pub package: String,
    pub vmlinux: PathBuf,
    pub modules: PathBuf,
}

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, VmError> {
    let out = cmd.output().map_err(err(format!("running {what}")))?;
    if !out.status.success() {
        return Err(VmError::Kernel(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where `scripts/setup.sh` leaves Debian's kernel package, and where a build downloads it.
pub const DEB_CACHE: &str = "/var/cache/bulkhead";

/// The newest kernel package in the cache.
fn cached_deb(dir: &Path) -> Option<PathBuf> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// The kernel a tenant's microVMs boot: the current build, if any and if it carries every
/// module this version of bulkhead loads in its guests (an older build is rebuilt).
pub fn current(state_root: &Path) -> Option<KernelInfo> {
    let dir = std::fs::canonicalize(state_root.join("kernels/current")).ok()?;
    let b = std::fs::read(dir.join("kernel.json")).ok()?;
    let info: KernelInfo = serde_json::from_slice(&b).ok()?;
    let order = std::fs::read_to_string(info.modules.join("order")).ok()?;
    let have: HashSet<&str> = order.lines().collect();
    GUEST_MODULES
        .iter()
        .all(|m| have.contains(m))
        .then_some(info)
}

/// The image package `linux-image-amd64` (or the arch's) depends on, e.g. `linux-image-6.1.0-56-amd64`.
fn resolve_package() -> Result<String, VmError> {
    let meta = match std::env::consts::ARCH {
        "x86_64" => "linux-image-amd64",
        "aarch64" => "linux-image-arm64",
        a => {
            return Err(VmError::Kernel(format!(
                "no Debian kernel package known for {a}"
            )))
        }
    };
    let out = run(
        Command::new("apt-cache").args(["depends", meta]),
        "apt-cache depends",
    )?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            VmError::Kernel(format!(
                "{meta} names no kernel image package (apt-get update?)"
            ))
        })
}

/// Cuts the xz payload out of a bzImage and decompresses it.
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), VmError> {
    let data = std::fs::read(bzimage).map_err(err(format!("reading {}", bzimage.display())))?;
    let magic = [0xfd, b'7', b'z', b'X', b'Z', 0];
    let at = data
        .windows(6)
        .position(|w| w == magic)
        .ok_or_else(|| VmError::Kernel(format!("{} holds no xz payload", bzimage.display())))?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(out).map_err(err("creating vmlinux"))?)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(err("running xz (install xz-utils)"))?;
    {
        use std::io::Write;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| VmError::Kernel("xz has no stdin".into()))?;
        // xz stops reading after the first stream; a broken pipe after that is expected.
        let _ = stdin.write_all(&data[at..]);
    }
    let _ = child.wait();
    let head = std::fs::read(out).map_err(err("reading vmlinux"))?;
    if !head.starts_with(b"\x7fELF") {
        return Err(VmError::Kernel(
            "the decompressed kernel is not an ELF file".into(),
        ));
    }
    Ok(())
}

/// `depends=` of a module file (from its .modinfo strings).
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.split(|b| *b == 0)
        .find(|s| s.starts_with(key))
        .map(|s| {
            String::from_utf8_lossy(&s[key.len()..])
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every `.ko` under `dir`, by module name.
fn index_modules(dir: &Path, out: &mut HashMap<String, PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            index_modules(&p, out);
        } else if let Some(n) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            out.insert(n.replace('-', "_"), p);
        }
    }
}

/// The modules to load, dependencies first.
pub fn load_order(
    wanted: &[&str],
    depends: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<String>, VmError> {
    fn visit(
        m: &str,
        depends: &dyn Fn(&str) -> Option<Vec<String>>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), VmError> {
        if !seen.insert(m.to_string()) {
            return Ok(());
        }
        let deps = depends(m)
            .ok_or_else(|| VmError::Kernel(format!("module {m} is not in the kernel package")))?;
        for d in deps {
            visit(&d, depends, seen, order)?;
        }
        order.push(m.to_string());
        Ok(())
    }
    let (mut seen, mut order) = (HashSet::new(), Vec::new());
    for m in wanted {
        visit(m, depends, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// Builds the guest kernel from Debian's package (`deb` given, or downloaded with apt).
pub fn build(state_root: &Path, deb: Option<&Path>) -> Result<KernelInfo, VmError> {
    let kernels = state_root.join("kernels");
    std::fs::create_dir_all(&kernels).map_err(err("creating the kernel store"))?;
    let work = kernels.join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(err("creating a build directory"))?;
    let result = (|| {
        let cache = Path::new(DEB_CACHE);
        let deb = match deb.map(Path::to_path_buf).or_else(|| cached_deb(cache)) {
            Some(d) => d,
            None => {
                let pkg = resolve_package()?;
                std::fs::create_dir_all(cache).map_err(err(format!("creating {DEB_CACHE}")))?;
                run(
                    Command::new("apt-get")
                        .args(["download", &pkg])
                        .current_dir(cache),
                    &format!(
                        "apt-get download {pkg} (run scripts/setup.sh where the Debian mirror is reachable, or pass --deb)"
                    ),
                )?;
                cached_deb(cache).ok_or_else(|| {
                    VmError::Kernel(format!(
                        "apt-get download {pkg} left no .deb in {DEB_CACHE}"
                    ))
                })?
            }
        };
        let package = deb
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let root = work.join("root");
        run(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
            "dpkg-deb -x",
        )?;
        let release = std::fs::read_dir(root.join("lib/modules"))
            .map_err(err("reading the package's modules"))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .next()
            .ok_or_else(|| VmError::Kernel("the package has no lib/modules/<release>".into()))?;
        let bz = root.join(format!("boot/vmlinuz-{release}"));
        let dest = kernels.join(&release);
        let staging = work.join("out");
        std::fs::create_dir_all(staging.join("modules"))
            .map_err(err("creating the kernel output"))?;
        extract_vmlinux(&bz, &staging.join("vmlinux"))?;
        let mut index = HashMap::new();
        index_modules(
            &root.join(format!("lib/modules/{release}/kernel")),
            &mut index,
        );
        let deps = |m: &str| -> Option<Vec<String>> {
            let p = index.get(m)?;
            std::fs::read(p).ok().map(|b| module_depends(&b))
        };
        let order = load_order(GUEST_MODULES, &deps)?;
        for m in &order {
            std::fs::copy(&index[m], staging.join(format!("modules/{m}.ko")))
                .map_err(err(format!("copying module {m}")))?;
        }
        std::fs::write(staging.join("modules/order"), order.join("\n") + "\n")
            .map_err(err("writing module order"))?;
        let info = KernelInfo {
            release: release.clone(),
            package,
            vmlinux: dest.join("vmlinux"),
            modules: dest.join("modules"),
        };
        std::fs::write(
            staging.join("kernel.json"),
            serde_json::to_vec_pretty(&info).unwrap_or_default(),
        )
        .map_err(err("writing kernel.json"))?;
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&staging, &dest).map_err(err("installing the kernel"))?;
        let link = kernels.join("current");
        let tmp = kernels.join(".current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&release, &tmp).map_err(err("linking the current kernel"))?;
        std::fs::rename(&tmp, &link).map_err(err("linking the current kernel"))?;
        Ok(info)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Writes a tenant's initramfs: the agent as `/init`, the kernel's guest modules, and the
/// mount points the agent's boot uses.
pub fn initramfs(kernel: &KernelInfo, agent: &Path, out: &Path) -> Result<(), VmError> {
    let tmp = out.with_extension("tmp");
    let f = std::fs::File::create(&tmp).map_err(err(format!("creating {}", tmp.display())))?;
    let mut c = crate::cpio::Cpio::new(std::io::BufWriter::new(f));
    let w = |e: std::io::Error| VmError::Io {
        what: "writing the initramfs".into(),
        source: e,
    };
    for d in ["dev", "proc", "sys", "newroot", "modules"] {
        c.dir(d).map_err(w)?;
    }
    let agent_bytes = std::fs::read(agent).map_err(err(format!("reading {}", agent.display())))?;
    c.file("init", 0o755, &agent_bytes).map_err(w)?;
    let order = std::fs::read_to_string(kernel.modules.join("order"))
        .map_err(err("reading module order"))?;
    c.file("modules/order", 0o644, order.as_bytes())
        .map_err(w)?;
    for m in order.lines().filter(|l| !l.is_empty()) {
        let b = std::fs::read(kernel.modules.join(format!("{m}.ko")))
            .map_err(err(format!("reading module {m}")))?;
        c.file(&format!("modules/{m}.ko"), 0o644, &b).map_err(w)?;
    }
    c.finish().map_err(w)?;
    std::fs::rename(&tmp, out).map_err(err("installing the initramfs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_come_from_modinfo() {
        let ko = b"\x7fELF....\0license=GPL\0depends=jbd2,mbcache,crc16\0vermagic=6.1\0";
        assert_eq!(module_depends(ko), vec!["jbd2", "mbcache", "crc16"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn load_order_puts_dependencies_first_once() {
        let deps = |m: &str| -> Option<Vec<String>> {
            Some(match m {
                "virtio_blk" => vec!["virtio".into(), "virtio_ring".into()],
                "virtio" => vec!["virtio_ring".into()],
                "virtio_ring" => vec![],
                "ext4" => vec!["jbd2".into()],
                "jbd2" => vec![],
                _ => return None,
            })
        };
        let o = load_order(&["virtio_blk", "ext4"], &deps).unwrap();
        assert_eq!(
            o,
            vec!["virtio_ring", "virtio", "virtio_blk", "jbd2", "ext4"]
        );
        let e = load_order(&["nosuch"], &deps).unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
    }
}
