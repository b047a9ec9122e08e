//! Volumes attached to nodes (#13, attach), end to end against the real kernel.
//!
//! The supervisor-level tests take a spec the daemon wrote for a real node, give it volumes
//! made here (`bulkhead_storage::ext4img::format_encrypted`), and start `bulkhead-supervisor`
//! on it directly, with or without the daemon's instruction (the spec's digest and the
//! volumes' keys on stdin): what a jail node sees (flags, data, read-only, limits), that an
//! edited spec attaches nothing, and that nothing stays on the host afterwards. Through the
//! API (and the one microVM test): `e2e_attach_api.rs`.

mod common;

use bulkhead_agent::client::AgentClient;
use bulkhead_agent::proto::ExecRequest;
use bulkhead_driver::{instruction, NodeSpec, VolumeMount};
use common::*;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn supervisor_bin() -> PathBuf {
    Path::new(BIN).with_file_name("bulkhead-supervisor")
}

/// A volume made here: its image, key and id.
struct Vol {
    id: String,
    key_id: String,
    image: PathBuf,
    key: [u8; 64],
}

impl Vol {
    fn make(dir: &Path, name: &str, size: u64, inodes: u64, owner: u32) -> Vol {
        let mut key = [0u8; 64];
        // SAFETY: a valid buffer of its length.
        unsafe { libc::getrandom(key.as_mut_ptr().cast(), 64, 0) };
        let image = dir.join(format!("{name}.img"));
        let secret = bulkhead_storage::Secret::<64>::from_slice(&key).unwrap();
        bulkhead_storage::ext4img::format_encrypted(&image, size, inodes, owner, owner, &secret)
            .unwrap();
        // A ULID-like id: 26 characters, of which the serial takes the last 20.
        let id = format!("01JATTACH{:0>17}", name.to_ascii_uppercase());
        Vol {
            key_id: format!("k-{name}"),
            id,
            image,
            key,
        }
    }

    fn mount(&self, path: &str, read_only: bool) -> VolumeMount {
        VolumeMount {
            id: self.id.clone(),
            image: self.image.clone(),
            key_id: self.key_id.clone(),
            path: path.into(),
            read_only,
            exec: false,
        }
    }

    /// The loop device backing the image, if any.
    fn loop_device(&self) -> Option<PathBuf> {
        bulkhead_storage::loopdev::find_backing(&self.image).unwrap()
    }

    /// Waits for the image's loop device to free itself (autoclear runs asynchronously).
    fn assert_detached(&self) {
        let until = Instant::now() + Duration::from_secs(5);
        while self.loop_device().is_some() {
            assert!(
                Instant::now() < until,
                "{} is still attached to {:?} after its node ended",
                self.image.display(),
                self.loop_device()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A node started by hand from a spec the daemon wrote for `template`, with `volumes`.
struct Manual {
    dir: PathBuf,
    spec_path: PathBuf,
    spec_bytes: Vec<u8>,
}

impl Manual {
    fn new(
        d: &Daemon,
        template: &str,
        dir: &Path,
        name: &str,
        volumes: Vec<VolumeMount>,
    ) -> Manual {
        let t = d
            .tenant_dir()
            .join("nodes")
            .join(template)
            .join("spec.json");
        let mut spec = NodeSpec::read(&t).unwrap();
        let node_dir = dir.join(name);
        for sub in ["", "rootfs", "scratch"] {
            std::fs::create_dir_all(node_dir.join(sub)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&node_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        spec.node = format!("{}-{name}", d.tenant);
        spec.hostname = spec.node.clone();
        spec.node_dir = node_dir.clone();
        spec.cgroup = format!("cattach{}{name}", std::process::id());
        spec.network = bulkhead_net::NetworkPlan::Loopback;
        spec.volumes = volumes;
        let spec_bytes = spec.to_json();
        let spec_path = node_dir.join("spec.json");
        std::fs::write(&spec_path, &spec_bytes).unwrap();
        Manual {
            dir: node_dir,
            spec_path,
            spec_bytes,
        }
    }

    /// The daemon's instruction for this spec with these keys.
    fn instruction(&self, vols: &[&Vol]) -> Vec<u8> {
        let keys: Vec<(&str, &[u8; 64])> =
            vols.iter().map(|v| (v.key_id.as_str(), &v.key)).collect();
        instruction::line(&self.spec_bytes, &keys)
            .as_bytes()
            .to_vec()
    }

    /// Starts `bulkhead-supervisor SPEC` with `stdin` piped in; returns its answer line and
    /// the process (still running after `ready`).
    fn start(&self, stdin: Option<&[u8]>) -> (String, Sup) {
        let mut c = Command::new(supervisor_bin())
            .arg(&self.spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = c.stdin.take().unwrap();
        if let Some(b) = stdin {
            input.write_all(b).unwrap();
        }
        drop(input);
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (line.trim().to_string(), Sup(c))
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

/// A supervisor this test started: ended (SIGTERM, which kills its node and removes its
/// cgroups once the init is gone) when dropped, also when the test fails halfway.
struct Sup(Child);

impl Sup {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() {
            if Instant::now() > until {
                eprintln!("the supervisor did not end on SIGTERM: killed");
                let _ = self.0.kill();
                let _ = self.0.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Ends a manual node and removes its directory.
fn end(sup: Sup, m: &Manual) {
    drop(sup);
    let _ = std::fs::remove_dir_all(&m.dir);
}

/// Runs a shell script in the node as its root; (exit code, stdout, stderr).
fn sh(sock: &Path, script: &str) -> (i32, String, String) {
    rt().block_on(async {
        let c = AgentClient::new(sock);
        let until = Instant::now() + Duration::from_secs(10);
        while c.ping().await.is_err() {
            assert!(Instant::now() < until, "the node's agent did not answer");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (out, err, st) = c
            .exec(ExecRequest {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        (
            st.code.unwrap_or(-1),
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    })
}

/// The mount options (field 6) of the mount at `path` in a mountinfo text.
fn mount_opts(mountinfo: &str, path: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&path)).then(|| f[5].to_string())
    })
}

/// Whether the host's mount table names the image or its loop device.
fn host_mounts_mention(v: &Vol, dev: Option<&Path>) -> bool {
    let host = std::fs::read_to_string("/proc/1/mountinfo").unwrap();
    host.contains(&*v.image.to_string_lossy())
        || dev.is_some_and(|d| host.contains(&format!("{} ", d.display())))
}

#[test]
fn a_jail_node_gets_its_volume_flagged_and_the_data_outlives_it() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("att", &[]);
    let template = d.add();
    let dir = test_dir();
    let uid = NodeSpec::read(
        &d.tenant_dir()
            .join("nodes")
            .join(&template)
            .join("spec.json"),
    )
    .unwrap()
    .uid_base;
    let v = Vol::make(dir.path(), "one", 64 << 20, 2048, uid);

    // A writer at /data.
    let m = Manual::new(
        &d,
        &template,
        dir.path(),
        "w",
        vec![v.mount("/data", false)],
    );
    let (line, sup) = m.start(Some(&m.instruction(&[&v])));
    assert!(line.starts_with("ready "), "{line}");
    let dev = v.loop_device();
    assert!(
        dev.is_some(),
        "the volume is on a loop device while the node runs"
    );
    let (code, out, err) = sh(
        &m.sock(),
        "echo marker-1 > /data/hello && cat /data/hello && cat /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("marker-1\n"), "{out}");
    let opts = mount_opts(&out, "/data").expect("/data is a mount in the node");
    for f in ["nodev", "nosuid", "noexec", "rw"] {
        assert!(opts.split(',').any(|o| o == f), "{f} missing in {opts}");
    }
    // noexec holds: a copied binary does not run from the volume.
    let (code, _, err) = sh(&m.sock(), "cp /bin/true /data/t && /data/t");
    assert_ne!(code, 0, "a binary ran from a noexec volume");
    assert!(err.contains("ermission denied"), "{err}");
    // Nothing of it in the host's mount table.
    assert!(!host_mounts_mention(&v, dev.as_deref()));
    end(sup, &m);
    v.assert_detached();

    // A reader at another path in a new node sees the data; writes fail with EROFS.
    let m = Manual::new(
        &d,
        &template,
        dir.path(),
        "r",
        vec![v.mount("/mnt/vol", true)],
    );
    let (line, sup) = m.start(Some(&m.instruction(&[&v])));
    assert!(line.starts_with("ready "), "{line}");
    let (code, out, err) = sh(
        &m.sock(),
        "cat /mnt/vol/hello; echo x > /mnt/vol/new; echo rc=$?; grep ' /mnt/vol ' /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("marker-1\n"), "{out}");
    assert!(out.contains("rc=1") || out.contains("rc=2"), "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    let opts = mount_opts(&out, "/mnt/vol").unwrap();
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    end(sup, &m);
    v.assert_detached();

    // The image holds no plaintext of what was written (fscrypt on the data directory).
    let raw = std::fs::read(&v.image).unwrap();
    assert!(!raw.windows(8).any(|w| w == b"marker-1"));
    d.stop_and_assert_clean();
}

#[test]
fn a_full_volume_fails_alone() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("atf", &[]);
    let template = d.add();
    let dir = test_dir();
    let uid = NodeSpec::read(
        &d.tenant_dir()
            .join("nodes")
            .join(&template)
            .join("spec.json"),
    )
    .unwrap()
    .uid_base;
    let v = Vol::make(dir.path(), "small", 16 << 20, 256, uid);
    let m = Manual::new(
        &d,
        &template,
        dir.path(),
        "f",
        vec![v.mount("/data", false)],
    );
    let (line, sup) = m.start(Some(&m.instruction(&[&v])));
    assert!(line.starts_with("ready "), "{line}");
    // Bytes: the volume fills and says so; the node's own root and the host go on.
    let (_, out, err) = sh(
        &m.sock(),
        "dd if=/dev/zero of=/data/big bs=1M count=64 2>&1; echo root > /tmp/ok && cat /tmp/ok",
    );
    assert!(out.contains("No space left on device"), "{out}{err}");
    assert!(out.ends_with("root\n"), "{out}");
    // Inodes: 256 in all.
    let (_, out, _) = sh(
        &m.sock(),
        "rm -f /data/big; i=0; while [ $i -lt 400 ]; do touch /data/f$i || break; i=$((i+1)); done 2>&1; echo made=$i",
    );
    let made: u32 = out
        .rsplit("made=")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {out:?}"));
    assert!(made < 256, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    let (code, _, _) = sh(&m.sock(), "echo fine > /tmp/after");
    assert_eq!(code, 0);
    end(sup, &m);
    v.assert_detached();
    d.stop_and_assert_clean();
}

#[test]
fn an_edited_spec_or_one_without_the_daemons_word_attaches_nothing() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("ate", &[]);
    let template = d.add();
    let dir = test_dir();
    let uid = NodeSpec::read(
        &d.tenant_dir()
            .join("nodes")
            .join(&template)
            .join("spec.json"),
    )
    .unwrap()
    .uid_base;
    let v = Vol::make(dir.path(), "victim", 16 << 20, 256, uid);

    // The daemon's instruction was for a spec without volumes; the file now names one.
    let m = Manual::new(&d, &template, dir.path(), "e", vec![]);
    let word = m.instruction(&[]);
    let mut edited: NodeSpec = NodeSpec::parse(&m.spec_bytes).unwrap();
    edited.volumes = vec![v.mount("/data", false)];
    std::fs::write(&m.spec_path, edited.to_json()).unwrap();
    let (line, mut sup) = m.start(Some(&word));
    assert!(line.starts_with("error spec_mismatch"), "{line}");
    assert!(sup.wait().code() != Some(0));
    assert!(
        v.loop_device().is_none(),
        "nothing of the volume was opened"
    );

    // The edited spec with no instruction at all (a supervisor started by hand).
    let (line, mut sup) = m.start(None);
    assert!(line.starts_with("error spec_mismatch"), "{line}");
    assert!(line.contains("no instruction"), "{line}");
    sup.wait();
    // Even with the keys: the digest names the other bytes.
    let (line, mut sup) = m.start(Some(&m.instruction(&[&v])));
    assert!(line.starts_with("error spec_mismatch"), "{line}");
    sup.wait();
    assert!(v.loop_device().is_none());
    assert!(!m.sock().exists(), "no node was started");

    // A wrong key for the right spec: refused by the volume itself.
    let m2 = Manual::new(
        &d,
        &template,
        dir.path(),
        "k",
        vec![v.mount("/data", false)],
    );
    let wrong = Vol {
        key: [7u8; 64],
        id: v.id.clone(),
        key_id: v.key_id.clone(),
        image: v.image.clone(),
    };
    let (line, mut sup) = m2.start(Some(&m2.instruction(&[&wrong])));
    assert!(line.starts_with("error "), "{line}");
    assert!(line.contains("key"), "{line}");
    sup.wait();
    v.assert_detached();
    let _ = std::fs::remove_dir_all(&m.dir);
    let _ = std::fs::remove_dir_all(&m2.dir);
    d.stop_and_assert_clean();
}
