//! What storage protection this host can give: fscrypt on an ext4 image (tried for real: a
//! 16 MiB image is formatted and its encrypted directory opened) and dm-crypt (the kernel
//! module's presence). Each missing protection comes with one sentence an operator can act on.

use std::path::Path;

use serde::Serialize;

use crate::ext4img;
use crate::secret::Secret;

/// The answer of [`Protection::detect`] (also `GET /info`'s `storage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protection {
    /// ext4 images with an fscrypt-encrypted `data` directory work here.
    pub fscrypt: bool,
    /// The kernel has dm-crypt.
    pub dm_crypt: bool,
    /// One sentence per missing protection.
    missing: Vec<String>,
}

impl Protection {
    /// Probes the host, using `scratch_dir` for a temporary image (removed afterwards).
    pub fn detect(scratch_dir: &Path) -> Protection {
        let mut missing = Vec::new();
        let fscrypt = match try_fscrypt(scratch_dir) {
            Ok(()) => true,
            Err(why) => {
                missing.push(format!(
                    "fscrypt: encrypted volumes and persistent layers are unavailable ({why}); \
                     they need root, loop devices, mkfs.ext4 and a kernel with CONFIG_FS_ENCRYPTION"
                ));
                false
            }
        };
        let dm_crypt = Path::new("/sys/module/dm_crypt").exists();
        if !dm_crypt {
            missing.push(
                "dm-crypt: the kernel has no dm_crypt module loaded (not needed today: volumes use fscrypt)"
                    .to_string(),
            );
        }
        Protection {
            fscrypt,
            dm_crypt,
            missing,
        }
    }

    /// One sentence per protection this host lacks; empty when it has them all.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }
}

fn try_fscrypt(scratch_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(scratch_dir).map_err(|e| format!("{}: {e}", scratch_dir.display()))?;
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| e.to_string())?;
    let img = scratch_dir.join(format!(".probe-{}.img", crate::fsutil::hex(&rnd)));
    let key = Secret::<64>::random();
    let r = ext4img::format_encrypted(&img, 16 << 20, 64, 0, 0, &key)
        .and_then(|()| ext4img::open_data(&img, &key, false).map(drop))
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&img);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_finds_fscrypt_here_and_cleans_up() {
        // The development and CI hosts have fscrypt (HOST-FACTS.md); dm-crypt is absent.
        let d = tempfile::tempdir().unwrap();
        let p = Protection::detect(d.path());
        assert!(p.fscrypt, "{:?}", p.missing());
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "probe image left behind"
        );
        assert_eq!(p.missing().len(), usize::from(!p.dm_crypt));
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["fscrypt"], true);
        assert!(j["missing"].is_array());
    }

    #[test]
    fn detect_explains_a_scratch_dir_it_cannot_use() {
        let p = Protection::detect(Path::new("/proc/no-such-dir"));
        assert!(!p.fscrypt);
        assert!(p.missing()[0].starts_with("fscrypt:"), "{:?}", p.missing());
    }
}
