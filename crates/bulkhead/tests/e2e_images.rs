//! End to end (#15 E): templates are images. The default `minimal` image answers E2B's
//! `/bin/bash -l -c` as root and as the account `user` (uid 1000, HOME /home/user); an OCI
//! image layout, an OCI archive and a docker archive made here without the internet (umoci and
//! skopeo from the `minimal` tree) import and run; a layout with two images needs `--ref`; the
//! `debian` image (debootstrap from the host apt's mirror) runs python3 under bash as `user`;
//! a microVM boots `minimal` with the same answers.
//!
//! The debian build takes minutes, so its tree is cached as a tarball under the target
//! directory, keyed by the recipe (`bulkhead_jail::image::debian::recipe`): a cached run
//! imports the tarball instead of building (set BULKHEAD_E2E_DEBIAN_REBUILD=1 to build anyway).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Runs `bulkhead vm exec NODE --uid U --gid U -- /bin/bash -l -c SCRIPT`.
fn bash(d: &Daemon, node: &str, uid: u32, script: &str) -> (i32, String, String) {
    let id = uid.to_string();
    let o = d.vm(&[
        "exec",
        node,
        "--uid",
        &id,
        "--gid",
        &id,
        "--",
        "/bin/bash",
        "-l",
        "-c",
        script,
    ]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run a tool");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn state_arg(d: &Daemon) -> String {
    d.state.to_str().unwrap().to_string()
}

/// Starts a daemon whose host group boots `image`.
fn daemon_with(prefix: &str, image: &str) -> Daemon {
    let image = image.to_string();
    Daemon::start_edited(prefix, &[], move |y| {
        y.replace("image: minimal", &format!("image: {image}"))
    })
}

/// Removes an image this test imported from the shared store.
fn drop_image(state: &Path, name: &str) {
    let _ = std::fs::remove_dir_all(state.join("images").join(name));
}

#[test]
fn minimal_answers_e2b_bash_as_root_and_as_user() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("eimgmin", &[]);
    let n = d.add();
    let (code, out, err) = bash(
        &d,
        &n,
        1000,
        "echo \"$0 $(id -u):$(id -g) $HOME\"; cd && touch f && ls -ln f; pwd",
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ash 1000:1000 /home/user", "{out}");
    assert!(
        lines[1].contains(" 1000 ") && lines[1].contains(" 1000 "),
        "{out}"
    );
    assert_eq!(lines[2], "/home/user", "{out}");
    let (code, out, err) = bash(
        &d,
        &n,
        0,
        "echo \"$(id -u) $HOME\"; grep ^user: /etc/passwd",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "0 /root\nuser:x:1000:1000:user:/home/user:/bin/sh\n");
    // A command's exit code comes through bash, and a missing command is the shell's 127.
    assert_eq!(bash(&d, &n, 1000, "exit 7").0, 7);
    assert_eq!(bash(&d, &n, 1000, "no-such-command").0, 127);
    d.stop_and_assert_clean();
}

/// The microVM driver boots the same `minimal` tree from its disk (mkfs.ext4 -d keeps the
/// owners): bash and `user` answer there too (TCG here, so one short check).
#[test]
fn minimal_in_a_microvm_answers_e2b_bash_as_user() {
    if !privileged() {
        return;
    }
    let netns = common::netlab::Netns::new();
    let d = Daemon::start_in(&netns.path(), "eimgvm", &vm_config());
    let n = d
        .vm_ok(&["add", &d.tenant, "--timeout", "180s"])
        .trim()
        .to_string();
    let (code, out, err) = bash(
        &d,
        &n,
        1000,
        "echo \"$0 $(id -u) $HOME\"; cd && touch f && stat -c %u f",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "ash 1000 /home/user\n1000\n"),
        "{err}"
    );
    d.stop_and_assert_clean();
}

/// An OCI layout with the `minimal` tree and a marker, made offline with umoci.
fn oci_layout(dir: &Path, rootfs: &Path, tag: &str) -> PathBuf {
    let layout = dir.join("layout");
    if !layout.exists() {
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(rootfs)
        .arg("/"));
    // A second layer: a marker, and a device node no image may carry onto the host.
    let extra = dir.join(format!("extra-{tag}"));
    std::fs::create_dir_all(extra.join("etc")).unwrap();
    std::fs::write(extra.join("etc/oci-marker"), format!("from layer {tag}\n")).unwrap();
    run(Command::new("mknod")
        .arg(extra.join("etc/kmsg"))
        .args(["c", "1", "11"]));
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(extra.join("etc"))
        .arg("/etc"));
    layout
}

#[test]
fn oci_layouts_and_archives_import_and_run() {
    if !privileged() {
        return;
    }
    for t in ["umoci", "skopeo", "mknod"] {
        if Command::new(t).arg("--version").output().is_err() {
            panic!("{t} is missing: scripts/setup.sh installs it");
        }
    }
    let d0 = Daemon::start("eimgoci", &[]); // makes sure `minimal` is in the store
    let state = state_arg(&d0);
    let rootfs = d0.state.join("images/minimal/rootfs");
    let work = test_dir();
    let layout = oci_layout(work.path(), &rootfs, "one");
    let suffix = d0.tenant.clone();
    let names = [
        format!("oci-{suffix}"),
        format!("ociar-{suffix}"),
        format!("dockar-{suffix}"),
    ];

    // The layout as it is.
    let t = Instant::now();
    let out = cli_ok(&[
        "image",
        "import",
        layout.to_str().unwrap(),
        "--name",
        &names[0],
        "--state-dir",
        &state,
    ]);
    eprintln!("oci layout import: {:?}: {out}", t.elapsed());
    let tree = d0.state.join("images").join(&names[0]).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/oci-marker")).unwrap(),
        "from layer one\n"
    );
    assert!(
        !tree.join("etc/kmsg").exists(),
        "a device node reached the image store"
    );
    assert!(std::fs::symlink_metadata(tree.join("bin/busybox"))
        .unwrap()
        .is_file());

    // An OCI archive and a docker archive of it (skopeo, offline).
    let archive = work.path().join("image.oci.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:one", layout.display()))
        .arg(format!("oci-archive:{}", archive.display())));
    cli_ok(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--name",
        &names[1],
        "--state-dir",
        &state,
    ]);
    let docker = work.path().join("image.docker.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:one", layout.display()))
        .arg(format!(
            "docker-archive:{}:bulkhead/test:one",
            docker.display()
        )));
    cli_ok(&[
        "image",
        "import",
        docker.to_str().unwrap(),
        "--name",
        &names[2],
        "--state-dir",
        &state,
    ]);
    let list = cli_ok(&["image", "list", "--state-dir", &state]);
    assert!(
        list.contains(&format!("{} ", names[1])) && list.contains("oci-archive "),
        "{list}"
    );
    assert!(list.contains("docker-archive "), "{list}");

    // Nodes boot from each.
    for name in &names {
        let d = daemon_with("eimgrun", name);
        let n = d.add();
        let (code, out, err) = bash(&d, &n, 1000, "cat /etc/oci-marker; echo $HOME");
        assert_eq!(
            (code, out.as_str()),
            (0, "from layer one\n/home/user\n"),
            "{name}: {err}"
        );
        d.stop_and_assert_clean();
    }

    // Two images in one layout: without --ref the import says which there are.
    oci_layout(work.path(), &rootfs, "two");
    let o = cli(&[
        "image",
        "import",
        layout.to_str().unwrap(),
        "--name",
        "never-made",
        "--state-dir",
        &state,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("pick one with --ref")
            && err.contains("one")
            && err.contains("two"),
        "{err}"
    );
    assert!(!d0.state.join("images/never-made").exists());
    cli_ok(&[
        "image",
        "import",
        layout.to_str().unwrap(),
        "--ref",
        "two",
        "--name",
        &names[0],
        "--state-dir",
        &state,
    ]);
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/oci-marker")).unwrap(),
        "from layer two\n"
    );

    // What is not an image says so, and leaves no staging behind.
    let bogus = work.path().join("bogus");
    std::fs::create_dir_all(&bogus).unwrap();
    std::fs::write(bogus.join("oci-layout"), "{}").unwrap();
    let o = cli(&[
        "image",
        "import",
        bogus.to_str().unwrap(),
        "--name",
        "never-made",
        "--state-dir",
        &state,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("index.json"), "{err}");
    let staged: Vec<String> = std::fs::read_dir(d0.state.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("never-made") || n.starts_with(".scratch-"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    for n in &names {
        drop_image(&d0.state, n);
    }
    d0.stop_and_assert_clean();
}

/// The cached debian tree for this recipe, under the target directory.
fn debian_cache() -> PathBuf {
    let mirror = bulkhead_jail::image::debian::mirror(None).expect("the host's Debian mirror");
    let recipe = bulkhead_jail::image::debian::recipe(&mirror);
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bulkhead-cache")
        .join(format!("{}.tar", recipe.replace('/', "-")))
}

#[test]
fn the_debian_image_runs_python_under_bash_as_user() {
    if !privileged() {
        return;
    }
    let state = shared_state();
    let st = state.to_str().unwrap().to_string();
    let cache = debian_cache();
    let t = Instant::now();
    if cache.exists() && std::env::var_os("BULKHEAD_E2E_DEBIAN_REBUILD").is_none() {
        cli_ok(&[
            "image",
            "import",
            cache.to_str().unwrap(),
            "--name",
            "debian",
            "--state-dir",
            &st,
        ]);
        eprintln!(
            "debian image imported from the cache {} in {:?}",
            cache.display(),
            t.elapsed()
        );
    } else {
        let child = Command::new(BIN)
            .args(["image", "build", "debian", "--state-dir", &st])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // debootstrap mounts /proc and /sys into the tree, in a mount namespace of its own:
        // the host's mount table never shows them while it runs.
        let pid = child.id();
        let mut seen = Vec::new();
        while Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            seen.extend(
                mounts
                    .lines()
                    .filter(|l| l.contains("/images/.debian.tmp-"))
                    .map(str::to_string),
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            seen.is_empty(),
            "the build's mounts showed on the host: {seen:?}"
        );
        assert!(
            out.status.success(),
            "bulkhead image build debian failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = String::from_utf8_lossy(&out.stderr);
        // Not a terminal: a line per stage, with its percentage.
        assert!(
            log.contains("%] Downloading packages") && log.contains("%] Adding the account user"),
            "{log}"
        );
        eprintln!("debian image built in {:?}", t.elapsed());
        let tree = state.join("images/debian/rootfs");
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        let tmp = cache.with_extension("tmp");
        run(Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&tree)
            .arg("-cpf")
            .arg(&tmp)
            .arg("."));
        std::fs::rename(&tmp, &cache).unwrap();
    }
    let list = cli_ok(&["image", "list", "--state-dir", &st]);
    assert!(list.lines().any(|l| l.starts_with("debian ")), "{list}");

    let d = daemon_with("eimgdeb", "debian");
    let n = d.add();
    let (code, out, err) = bash(
        &d,
        &n,
        1000,
        "python3 -c \"print(1+1)\"; echo \"$(id -un) $HOME $0\"; test -O ~ && echo owns-home",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "2\nuser /home/user /bin/bash\nowns-home\n");
    let (code, out, _) = bash(
        &d,
        &n,
        0,
        "python3 -c 'import ssl, json; print(json.dumps(1))'; cat /etc/debian_version",
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("1\n12."), "{out}");
    d.stop_and_assert_clean();
}
