//! OCI image archives built in Rust for the containerd tests (#16), with no network: one
//! gzipped layer holding Debian's busybox-static (`/bin/busybox`) with a symlink per applet in
//! `/bin`, `/etc/passwd` and `/etc/group` (root and `user` 1000), `/root`, `/home/user`
//! (owned by 1000) and `/tmp` (1777); an image config, a manifest and an `index.json` whose
//! entries carry `io.containerd.image.name` (the name `ctr image import` gives the image) and
//! `org.opencontainers.image.ref.name` (its tag), as an uncompressed tar in OCI image layout.
//!
//! Invariants: the bytes are deterministic for a given busybox (fixed mtimes, sorted entries,
//! gzip without a timestamp), so digests are stable between runs; every digest is the SHA-256
//! of the blob it names, sizes are the blobs' sizes, and the config's `diff_ids` is the digest
//! of the uncompressed layer.
//!
//! Images: [`BUSYBOX`] (`Cmd ["sh"]`) and [`PAUSE`] (entrypoint a long `sleep`, the pod
//! sandbox image the CRI tests name as `sandbox_image`). [`write_test_images`] writes one
//! archive holding both.

use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The busybox image: `sh` by default, every busybox applet on `PATH`.
pub const BUSYBOX: &str = "bulkhead.test/busybox:1";
/// The pod sandbox image: a `sleep` that outlives any test.
pub const PAUSE: &str = "bulkhead.test/pause:1";
/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX_BIN: &str = "/bin/busybox";
/// The image's `PATH`.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A fixed mtime for every entry (2026-01-01), so the layer's digest is stable.
const MTIME: u64 = 1_767_225_600;

/// What one image of an archive is.
pub struct ImageSpec {
    /// The full name `ctr image import` gives it, `host/repo:tag`.
    pub name: &'static str,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl ImageSpec {
    pub fn busybox() -> ImageSpec {
        ImageSpec {
            name: BUSYBOX,
            entrypoint: vec![],
            cmd: vec!["sh".into()],
        }
    }

    pub fn pause() -> ImageSpec {
        ImageSpec {
            name: PAUSE,
            entrypoint: vec!["/bin/sleep".into(), "2147483647".into()],
            cmd: vec![],
        }
    }
}

/// The lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The OCI name of this machine's architecture (`amd64`, `arm64`, ...).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The names of busybox's applets (`busybox --list`), sorted.
pub fn applets() -> Vec<String> {
    let o = std::process::Command::new(BUSYBOX_BIN)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("{BUSYBOX_BIN} --list: {e} (install Debian's busybox-static)"));
    assert!(o.status.success(), "{BUSYBOX_BIN} --list failed");
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/') && *l != "busybox")
        .map(String::from)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_size(size);
    h.set_mtime(MTIME);
    h
}

/// The layer, uncompressed: the root filesystem of every test image.
pub fn layer_tar() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX_BIN)
        .unwrap_or_else(|e| panic!("{BUSYBOX_BIN}: {e} (install Debian's busybox-static)"));
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64| {
        let mut h = header(tar::EntryType::Directory, mode, uid, 0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, mode, 0, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    for (d, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("home/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/bin/", 0o755),
        ("var/", 0o755),
    ] {
        dir(&mut b, d, mode, 0);
    }
    dir(&mut b, "home/user/", 0o755, 1000);
    file(&mut b, "bin/busybox", 0o755, &busybox);
    for a in applets() {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    );
    file(&mut b, "etc/group", 0o644, b"root:x:0:\nuser:x:1000:\n");
    b.into_inner().unwrap()
}

/// `data` gzipped, with no timestamp or name in the header.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn descriptor(media: &str, blob: &[u8]) -> serde_json::Value {
    json!({
        "mediaType": media,
        "digest": format!("sha256:{}", sha256_hex(blob)),
        "size": blob.len(),
    })
}

/// Writes an OCI image-layout archive (uncompressed tar) at `path` holding `images`; returns
/// `path`. All images share the one layer.
pub fn write_archive(path: &Path, images: &[ImageSpec]) -> PathBuf {
    let layer = layer_tar();
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let layer_gz = gzip(&layer);
    let mut blobs: Vec<Vec<u8>> = vec![layer_gz.clone()];
    let mut manifests = Vec::new();
    for img in images {
        let config = serde_json::to_vec(&json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": oci_arch(),
            "os": "linux",
            "config": {
                "Env": [PATH_ENV],
                "Entrypoint": if img.entrypoint.is_empty() { serde_json::Value::Null } else { json!(img.entrypoint) },
                "Cmd": if img.cmd.is_empty() { serde_json::Value::Null } else { json!(img.cmd) },
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created": "2026-01-01T00:00:00Z", "created_by": "bulkhead tests/common/oci.rs" }],
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": descriptor(MEDIA_CONFIG, &config),
            "layers": [descriptor(MEDIA_LAYER, &layer_gz)],
        }))
        .unwrap();
        let tag = img
            .name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or("latest");
        let mut d = descriptor(MEDIA_MANIFEST, &manifest);
        d["platform"] = json!({ "architecture": oci_arch(), "os": "linux" });
        d["annotations"] = json!({
            "io.containerd.image.name": img.name,
            "org.opencontainers.image.ref.name": tag,
        });
        manifests.push(d);
        blobs.push(config);
        blobs.push(manifest);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": manifests,
    }))
    .unwrap();

    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut put = |name: &str, data: &[u8], mode: u32| {
        let kind = if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        };
        let mut h = header(kind, mode, 0, data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    put("blobs/", b"", 0o755);
    put("blobs/sha256/", b"", 0o755);
    let mut seen = std::collections::BTreeSet::new();
    for blob in &blobs {
        let hex = sha256_hex(blob);
        if seen.insert(hex.clone()) {
            put(&format!("blobs/sha256/{hex}"), blob, 0o644);
        }
    }
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    put("index.json", &index, 0o644);
    b.into_inner().unwrap().sync_all().unwrap();
    path.to_path_buf()
}

/// Writes `images.tar` in `dir` holding [`BUSYBOX`] and [`PAUSE`]; returns its path.
pub fn write_test_images(dir: &Path) -> PathBuf {
    write_archive(
        &dir.join("images.tar"),
        &[ImageSpec::busybox(), ImageSpec::pause()],
    )
}
