//! Slicer's chunked copy, served by the agent itself. Slicer's SDKs upload a big file (or a
//! staged tar) as checksummed chunks with ordinary copies into a session directory beside the
//! destination (`<parent>/.slicer-upload-<32 hex>/chunks/NNNNNN.chunk`, then `manifest.json`),
//! and then run `/usr/local/bin/slicer-agent upload check|finalise|abort` through exec. A node
//! has no such program, so an exec of exactly that path with `upload` as its first argument is
//! answered here, in the exec protocol's own frames, unless the node has a real program there.
//!
//! - `check` prints `chunked-copy-v2`.
//! - `finalise --manifest M --uid U --gid G` validates the manifest (bounded: at most
//!   [`MAX_MANIFEST`] bytes and [`MAX_CHUNKS`] chunks), checks every chunk's size and SHA-256,
//!   then assembles them at the destination with cp's rules (a file through a temporary name
//!   and a rename; a tree all or nothing through `untar.rs`), owned by U:G.
//! - `abort --manifest M` removes the session directory.
//!
//! The session directory is removed after `finalise` whether it succeeded or not, and by
//! `abort`; only a directory whose name is `.slicer-upload-` and 32 hex digits is ever
//! removed. The staging area is the node's own disk, bounded by its storage limit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::proto::{self, Event, ExecRequest, Kind};
use crate::sha256::Sha256;

/// The program Slicer's SDKs run for chunked copies.
pub const SLICER_AGENT: &str = "/usr/local/bin/slicer-agent";
/// A manifest larger than this is refused.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// A manifest with more chunks than this is refused.
pub const MAX_CHUNKS: usize = 65_536;

/// Whether `req` is a chunked-copy step for the agent to answer (run as uid 0, with no real
/// program at [`SLICER_AGENT`]).
pub(crate) fn is_upload(req: &ExecRequest) -> bool {
    // As root only, as the SDKs run it: the steps write as root and give the result to
    // `--uid`/`--gid`, which a caller asking for another uid could not do itself.
    req.cmd == SLICER_AGENT
        && req.uid == 0
        && req.args.first().map(String::as_str) == Some("upload")
        && req.tty.is_none()
        && fs::symlink_metadata(SLICER_AGENT).is_err()
}

#[derive(Debug, Deserialize)]
struct Chunk {
    index: usize,
    size: u64,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    version: u32,
    mode: String,
    destination: String,
    #[serde(default)]
    permissions: String,
    size: u64,
    #[serde(default)]
    copy_semantics: String,
    #[serde(default)]
    source_name: String,
    #[serde(default)]
    source_type: String,
    #[serde(default)]
    copy_contents: bool,
    chunks: Vec<Chunk>,
}

/// Runs the step and answers as an exec would: `started`, output, `exit`.
pub(crate) fn run(req: ExecRequest, mut conn: UnixStream) {
    let started = Event::Started {
        pid: std::process::id() as i32,
        version: proto::VERSION,
    };
    if proto::write_json(&mut conn, Kind::Event, &started).is_err() {
        return;
    }
    let (code, out, err) = match step(&req.args[1..]) {
        Ok(out) => (0, out, String::new()),
        Err(e) => (1, String::new(), format!("{e}\n")),
    };
    if !out.is_empty() {
        let _ = proto::write_frame(&mut conn, Kind::Stdout, out.as_bytes());
    }
    if !err.is_empty() {
        let _ = proto::write_frame(&mut conn, Kind::Stderr, err.as_bytes());
    }
    let exit = Event::Exit {
        code: Some(code),
        signal: None,
        timed_out: false,
    };
    let _ = proto::write_json(&mut conn, Kind::Event, &exit);
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

fn fail(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, m.into())
}

/// `--name value` or `--name=value`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == long {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix(&format!("{long}=")) {
            return Some(v.to_string());
        }
    }
    None
}

fn id_flag(args: &[String], name: &str) -> io::Result<Option<u32>> {
    match flag(args, name) {
        None => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(u32::MAX) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(fail(format!("--{name} {v:?} is not a number"))),
        },
    }
}

fn step(args: &[String]) -> io::Result<String> {
    match args.first().map(String::as_str) {
        Some("check") => Ok("chunked-copy-v2\n".into()),
        Some("finalise") | Some("finalize") => {
            let manifest = manifest_path(args)?;
            let session = session_of(&manifest)?;
            let r = finalise(&manifest, id_flag(args, "uid")?, id_flag(args, "gid")?);
            let _ = fs::remove_dir_all(&session);
            r.map(|_| String::new())
        }
        Some("abort") => {
            let manifest = manifest_path(args)?;
            match fs::remove_dir_all(session_of(&manifest)?) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(String::new()),
            }
        }
        other => Err(fail(format!(
            "unknown upload step {other:?}: use check, finalise or abort"
        ))),
    }
}

fn manifest_path(args: &[String]) -> io::Result<PathBuf> {
    let m = flag(args, "manifest").ok_or_else(|| fail("--manifest is required"))?;
    if !m.starts_with('/') || m.split('/').any(|c| c == "..") {
        return Err(fail(format!("--manifest {m:?} must be an absolute path")));
    }
    Ok(PathBuf::from(m))
}

/// The session directory holding `manifest`; only a `.slicer-upload-<32 hex>` one.
fn session_of(manifest: &Path) -> io::Result<PathBuf> {
    let dir = manifest
        .parent()
        .ok_or_else(|| fail("the manifest has no directory"))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ok = name
        .strip_prefix(".slicer-upload-")
        .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(fail(format!(
            "{} is not a chunked-copy session directory (.slicer-upload-<32 hex digits>)",
            dir.display()
        )));
    }
    Ok(dir.to_path_buf())
}

fn read_manifest(path: &Path) -> io::Result<Manifest> {
    let mut data = Vec::new();
    File::open(path)?
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > MAX_MANIFEST {
        return Err(fail(format!(
            "the manifest is larger than {MAX_MANIFEST} bytes"
        )));
    }
    let m: Manifest =
        serde_json::from_slice(&data).map_err(|e| fail(format!("invalid manifest: {e}")))?;
    validate(&m)?;
    Ok(m)
}

/// The manifest's own rules (the SDKs' `CopyManifest.Validate`), and our bounds.
fn validate(m: &Manifest) -> io::Result<()> {
    if m.version != 1 && m.version != 2 {
        return Err(fail(format!(
            "unsupported copy manifest version: {}",
            m.version
        )));
    }
    if m.mode != "binary" && m.mode != "tar" {
        return Err(fail(format!("invalid copy mode: {:?}", m.mode)));
    }
    if m.version == 2 {
        if m.copy_semantics != "cp-v1" {
            return Err(fail(format!(
                "invalid copy semantics: {:?}",
                m.copy_semantics
            )));
        }
        let typ_ok = (m.source_type == "file" && m.mode == "binary" && !m.copy_contents)
            || (m.source_type == "directory" && m.mode == "tar");
        if !typ_ok {
            return Err(fail("source_type does not fit the mode"));
        }
        let n = &m.source_name;
        if !m.copy_contents && (n.is_empty() || n == "." || n == ".." || n.contains('/')) {
            return Err(fail(format!("invalid copy source name: {n:?}")));
        }
    }
    if !m.destination.starts_with('/') || m.destination.split('/').any(|c| c == "..") {
        return Err(fail(format!(
            "destination {:?} must be an absolute path without ..",
            m.destination
        )));
    }
    if m.chunks.len() > MAX_CHUNKS {
        return Err(fail(format!("more than {MAX_CHUNKS} chunks")));
    }
    let mut total = 0u64;
    for (i, c) in m.chunks.iter().enumerate() {
        if c.index != i || c.size == 0 || c.sha256.len() != 64 {
            return Err(fail(format!(
                "chunk {i} is out of sequence, empty or without a SHA-256"
            )));
        }
        total = total
            .checked_add(c.size)
            .ok_or_else(|| fail("chunk sizes overflow"))?;
    }
    if total != m.size {
        return Err(fail(format!(
            "chunk sizes total {total} bytes, expected {}",
            m.size
        )));
    }
    Ok(())
}

fn chunk_path(session: &Path, index: usize) -> PathBuf {
    session.join("chunks").join(format!("{index:06}.chunk"))
}

/// Checks every chunk against the manifest before anything is written.
fn verify(session: &Path, m: &Manifest) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    for c in &m.chunks {
        let p = chunk_path(session, c.index);
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| fail(format!("chunk {}: {e}", c.index)))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
            h.update(&buf[..k]);
        }
        if n != c.size || !h.hex().eq_ignore_ascii_case(&c.sha256) {
            return Err(fail(format!(
                "chunk {} does not match its manifest (size or SHA-256)",
                c.index
            )));
        }
    }
    Ok(())
}

/// The chunks read in order as one stream.
struct Chunks<'a> {
    session: &'a Path,
    next: usize,
    count: usize,
    cur: Option<File>,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(f) = &mut self.cur {
                let n = f.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.cur = None;
            }
            if self.next == self.count {
                return Ok(0);
            }
            self.cur = Some(File::open(chunk_path(self.session, self.next))?);
            self.next += 1;
        }
    }
}

fn finalise(manifest: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let session = session_of(manifest)?;
    let m = read_manifest(manifest)?;
    verify(&session, &m)?;
    let dest = PathBuf::from(&m.destination);
    let is_dir = fs::metadata(&dest).is_ok_and(|d| d.is_dir());
    let target = if m.version == 2 && !m.copy_contents && is_dir {
        dest.join(&m.source_name)
    } else {
        dest
    };
    let mut stream = Chunks {
        session: &session,
        next: 0,
        count: m.chunks.len(),
        cur: None,
    };
    if m.mode == "tar" {
        return crate::untar::copy_in_tar(&mut stream, &target, uid, gid, (false, false)).map_err(
            |e| match e {
                Event::Error { message, .. } => fail(message),
                e => fail(format!("{e:?}")),
            },
        );
    }
    let mode = if m.permissions.is_empty() {
        0o644
    } else {
        u32::from_str_radix(&m.permissions, 8)
            .ok()
            .filter(|p| *p <= 0o7777)
            .ok_or_else(|| fail(format!("invalid permissions {:?}", m.permissions)))?
    };
    crate::copy::write_file_atomically(&mut stream, &target, mode, uid, gid, "chunked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sha(d: &[u8]) -> String {
        let mut s = Sha256::new();
        s.update(d);
        s.hex()
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A session as the SDK leaves it: chunks, then the manifest.
    fn session(root: &Path, data: &[u8], chunk: usize, extra: &str) -> PathBuf {
        let s = root.join(".slicer-upload-0123456789abcdef0123456789abcdef");
        fs::create_dir_all(s.join("chunks")).unwrap();
        let mut chunks = Vec::new();
        for (i, part) in data.chunks(chunk).enumerate() {
            fs::write(chunk_path(&s, i), part).unwrap();
            chunks.push(format!(
                r#"{{"index":{i},"size":{},"sha256":"{}"}}"#,
                part.len(),
                sha(part)
            ));
        }
        let m = format!(
            r#"{{"version":2,"uid":0,"gid":0,"size":{},"copy_semantics":"cp-v1",{extra},"chunks":[{}]}}"#,
            data.len(),
            chunks.join(",")
        );
        fs::write(s.join("manifest.json"), m).unwrap();
        s.join("manifest.json")
    }

    #[test]
    fn finalise_assembles_a_file_into_a_directory_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let dest = d.path().to_str().unwrap();
        let extra = format!(
            r#""mode":"binary","destination":"{dest}","permissions":"0640","source_name":"big.bin","source_type":"file""#
        );
        let m = session(d.path(), &data, 3000, &extra);
        let a = args(&[
            "finalise",
            "--manifest",
            m.to_str().unwrap(),
            "--uid",
            "0",
            "--gid",
            "0",
        ]);
        step(&a).unwrap();
        assert_eq!(fs::read(d.path().join("big.bin")).unwrap(), data);
        let mode = fs::metadata(d.path().join("big.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(!m.parent().unwrap().exists(), "the session is removed");
        assert_eq!(step(&args(&["check"])).unwrap(), "chunked-copy-v2\n");
    }

    #[test]
    fn a_bad_chunk_writes_nothing_and_abort_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.bin");
        let extra = format!(
            r#""mode":"binary","destination":"{}","source_name":"x","source_type":"file""#,
            dest.display()
        );
        let m = session(d.path(), b"hello world", 4, &extra);
        fs::write(chunk_path(m.parent().unwrap(), 1), b"XXXX").unwrap();
        let a = args(&["finalise", "--manifest", m.to_str().unwrap()]);
        let e = step(&a).unwrap_err();
        assert!(e.to_string().contains("chunk 1"), "{e}");
        assert!(!dest.exists());
        assert!(!m.parent().unwrap().exists());

        let m = session(d.path(), b"again", 2, &extra);
        step(&args(&["abort", "--manifest", m.to_str().unwrap()])).unwrap();
        assert!(!m.parent().unwrap().exists());
        // Only a session directory is ever removed.
        let other = d.path().join("keep/manifest.json");
        fs::create_dir_all(other.parent().unwrap()).unwrap();
        assert!(step(&args(&["abort", "--manifest", other.to_str().unwrap()])).is_err());
        assert!(other.parent().unwrap().exists());
    }

    #[test]
    fn only_roots_exec_of_the_program_is_answered() {
        let req = |uid, cmd: &str, first: &str| ExecRequest {
            cmd: cmd.into(),
            args: vec![first.into(), "check".into()],
            uid,
            ..Default::default()
        };
        assert!(is_upload(&req(0, SLICER_AGENT, "upload")));
        assert!(!is_upload(&req(1000, SLICER_AGENT, "upload")));
        assert!(!is_upload(&req(0, "slicer-agent", "upload")));
        assert!(!is_upload(&req(0, SLICER_AGENT, "download")));
    }

    #[test]
    fn a_tree_arrives_whole() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "sub/f", &b"hi"[..]).unwrap();
        let tarball = b.into_inner().unwrap();
        fs::create_dir(d.path().join("dest")).unwrap();
        let extra = format!(
            r#""mode":"tar","destination":"{}","source_name":"tree","source_type":"directory""#,
            d.path().join("dest").display()
        );
        let m = session(d.path(), &tarball, 1000, &extra);
        step(&args(&["finalise", "--manifest", m.to_str().unwrap()])).unwrap();
        assert_eq!(fs::read(d.path().join("dest/tree/sub/f")).unwrap(), b"hi");
    }
}
