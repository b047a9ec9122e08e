//! Container images as bulkhead images: an OCI image layout (a directory with `oci-layout`),
//! an OCI archive (the same as a tar) or a docker archive (`docker save`). skopeo (Debian's
//! package) copies the source into an OCI layout in scratch space, verifying every blob's
//! digest and picking this host's platform from a multi-platform index; umoci (Debian's
//! package) applies the layers in order (whiteouts honoured, paths kept inside the bundle)
//! into a bundle whose `rootfs` becomes the image's tree.
//!
//! Invariants: the scratch space (`images/.scratch-<pid>-<id>`, 0700) is wiped afterwards
//! whatever happens; the tree is unpacked with real owners (uid 0 stays 0, so the tenant
//! shift applies as for every image) inside the 0700 staging directory, and the device nodes a
//! layer may carry are removed before it becomes visible ([`super::scratch::sanitize`]). The
//! image's config (entrypoint, env, user) is not applied: a node runs bulkhead's agent.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use super::scratch;
use super::store::{err, ioe};
use crate::JailError;

/// What an import source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A root file system: a directory or a .tar/.tar.gz of one.
    Rootfs,
    OciLayout,
    OciArchive,
    DockerArchive,
}

impl Kind {
    /// skopeo's transport for the kind.
    pub fn transport(self) -> &'static str {
        match self {
            Kind::Rootfs => "rootfs",
            Kind::OciLayout => "oci",
            Kind::OciArchive => "oci-archive",
            Kind::DockerArchive => "docker-archive",
        }
    }

    /// A directory with `oci-layout` is an OCI layout; a tar with a top-level `oci-layout` an
    /// OCI archive, one with a top-level `manifest.json` and no `etc/` a docker archive.
    pub fn detect(src: &Path, md: &fs::Metadata) -> Result<Kind, JailError> {
        if md.is_dir() {
            return Ok(if src.join("oci-layout").is_file() {
                Kind::OciLayout
            } else {
                Kind::Rootfs
            });
        }
        let mut f = fs::File::open(src).map_err(ioe(src.display()))?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).map_err(ioe(src.display()))?;
        let gzip = n == 2 && magic == [0x1f, 0x8b];
        let f = fs::File::open(src).map_err(ioe(src.display()))?;
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let (mut layout, mut manifest, mut etc) = (false, false, false);
        let mut a = tar::Archive::new(reader);
        // Not a tar (or a broken one): the rootfs path says so when it unpacks.
        let Ok(entries) = a.entries() else {
            return Ok(Kind::Rootfs);
        };
        for e in entries {
            let Ok(e) = e else { break };
            let Ok(p) = e.path() else { continue };
            let p = p.to_string_lossy();
            let p = p.trim_start_matches("./").trim_end_matches('/');
            match p {
                "oci-layout" => layout = true,
                "manifest.json" => manifest = true,
                _ => etc |= p == "etc" || p.starts_with("etc/"),
            }
            if layout {
                break;
            }
        }
        let kind = match (layout, manifest && !etc) {
            (true, _) => Kind::OciArchive,
            (false, true) => Kind::DockerArchive,
            _ => Kind::Rootfs,
        };
        if gzip && kind != Kind::Rootfs {
            return Err(err(format!(
                "{} is a compressed {} : decompress it first (`gunzip`); skopeo reads the tar itself",
                src.display(),
                kind.transport()
            )));
        }
        Ok(kind)
    }
}

/// The image references of an OCI layout's index (`org.opencontainers.image.ref.name`).
fn layout_refs(dir: &Path) -> Result<(usize, Vec<String>), JailError> {
    let index = dir.join("index.json");
    let text = fs::read(&index).map_err(|e| {
        err(format!(
            "{} is no OCI image layout: reading index.json: {e}",
            dir.display()
        ))
    })?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| err(format!("{}: index.json is not JSON: {e}", dir.display())))?;
    let manifests = v["manifests"].as_array().cloned().unwrap_or_default();
    let refs = manifests
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect();
    Ok((manifests.len(), refs))
}

fn tool(name: &str, package: &str) -> Result<std::path::PathBuf, JailError> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = ["/usr/bin", "/usr/sbin"]
        .into_iter()
        .chain(path.split(':'))
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            err(format!(
                "{name} is not installed: importing OCI images needs it (`apt-get install {package}`; scripts/setup.sh does)"
            ))
        });
    found
}

fn run(what: &str, cmd: &mut Command) -> Result<(), JailError> {
    let out = cmd
        .output()
        .map_err(|e| err(format!("running {what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = msg.iter().rev().take(3).rev().cloned().collect::<Vec<_>>();
    Err(err(format!(
        "{what} failed ({}): {}",
        out.status,
        last.join(" / ")
    )))
}

/// Unpacks `src` (of `kind`, not [`Kind::Rootfs`]) into the staged `root`; `oci_ref` picks
/// one image of a source that holds several.
pub(crate) fn unpack(
    kind: Kind,
    src: &Path,
    oci_ref: Option<&str>,
    root: &Path,
) -> Result<(), JailError> {
    let skopeo = tool("skopeo", "skopeo")?;
    let umoci = tool("umoci", "umoci")?;
    if kind == Kind::OciLayout && oci_ref.is_none() {
        let (n, refs) = layout_refs(src)?;
        if n == 0 {
            return Err(err(format!(
                "the OCI layout {} holds no image",
                src.display()
            )));
        }
        if n > 1 {
            return Err(err(format!(
                "the OCI layout {} holds {n} images: pick one with --ref ({})",
                src.display(),
                if refs.is_empty() {
                    "they have no names".to_string()
                } else {
                    refs.join(", ")
                }
            )));
        }
    }
    let src = fs::canonicalize(src).map_err(ioe(src.display()))?;
    let images = root
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| err("the staging directory has no parent"))?;
    let scratch = scratch::scratch(images)?;
    let s = scratch.path();
    let tmp = s.join("tmp");
    fs::create_dir(&tmp).map_err(ioe("creating scratch tmp"))?;
    // Local files only: no signature to check, and no host policy should make it fail.
    let policy = s.join("policy.json");
    fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .map_err(ioe("writing policy.json"))?;
    let from = match oci_ref {
        Some(r) => format!("{}:{}:{r}", kind.transport(), src.display()),
        None => format!("{}:{}", kind.transport(), src.display()),
    };
    let layout = s.join("layout");
    run(
        &format!("skopeo reading {from}"),
        Command::new(&skopeo)
            .env("TMPDIR", &tmp)
            .arg("--policy")
            .arg(&policy)
            .args(["copy", "--quiet", &from])
            .arg(format!("oci:{}:bulkhead", layout.display())),
    )?;
    let bundle = s.join("bundle");
    run(
        &format!("umoci unpacking {from}"),
        Command::new(&umoci)
            .env("TMPDIR", &tmp)
            .args(["unpack", "--image"])
            .arg(format!("{}:bulkhead", layout.display()))
            .arg(&bundle),
    )?;
    fs::remove_dir(root).map_err(ioe("replacing the staged rootfs"))?;
    fs::rename(bundle.join("rootfs"), root).map_err(ioe("moving the unpacked rootfs"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[&str]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, e, &b"{}"[..]).unwrap();
        }
        b.finish().unwrap();
        f
    }

    fn kind(p: &Path) -> Result<Kind, JailError> {
        Kind::detect(p, &fs::metadata(p).unwrap())
    }

    #[test]
    fn sources_are_told_apart() {
        let oci = tar_of(&["blobs/sha256/ab", "index.json", "./oci-layout"]);
        assert_eq!(kind(oci.path()).unwrap(), Kind::OciArchive);
        let docker = tar_of(&["abc/layer.tar", "manifest.json", "repositories"]);
        assert_eq!(kind(docker.path()).unwrap(), Kind::DockerArchive);
        let rootfs = tar_of(&["etc/passwd", "manifest.json"]);
        assert_eq!(kind(rootfs.path()).unwrap(), Kind::Rootfs);
        let d = tempfile::tempdir().unwrap();
        assert_eq!(kind(d.path()).unwrap(), Kind::Rootfs);
        fs::write(d.path().join("oci-layout"), "{}").unwrap();
        assert_eq!(kind(d.path()).unwrap(), Kind::OciLayout);
    }

    #[test]
    fn a_layout_with_several_images_needs_a_ref() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        fs::write(
            d.path().join("index.json"),
            r#"{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"a"}},{"annotations":{"org.opencontainers.image.ref.name":"b"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            layout_refs(d.path()).unwrap(),
            (2, vec!["a".into(), "b".into()])
        );
        let root = d.path().join("images/.x.tmp-1-0123456789abcdef/rootfs");
        fs::create_dir_all(&root).unwrap();
        match unpack(Kind::OciLayout, d.path(), None, &root) {
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("pick one with --ref (a, b)") || e.contains("not installed"),
                    "{e}"
                );
            }
            Ok(()) => panic!("two images and no --ref were accepted"),
        }
    }
}
