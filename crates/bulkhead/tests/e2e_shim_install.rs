//! `bulkhead shim install` (#16, part E): the real binary installs the real shim binary and
//! writes the options file and the containerd snippet into temporary directories; the files are
//! parsed back as TOML, and Debian's containerd (when installed) merges the drop-in with
//! `containerd config dump`, which starts nothing. Needs no root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
const SHIM: &str = "containerd-shim-bulkhead-v2";

/// The shim built beside `bulkhead` (`cargo build` of the workspace; scripts/test.sh builds it).
fn built_shim() -> Option<PathBuf> {
    let p = Path::new(BIN).with_file_name(SHIM);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing: build the workspace's binaries first",
            p.display()
        );
    }
    eprintln!(
        "SKIP: {} is missing (cargo build -p bulkhead-shim)",
        p.display()
    );
    None
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("run bulkhead")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_writes_shim_options_and_prints_the_snippet() {
    let Some(shim) = built_shim() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (bin_dir, cfg_dir) = (dir.path().join("bin"), dir.path().join("etc/bulkhead"));
    let o = run(
        Path::new(BIN),
        &[
            "shim",
            "install",
            "--bin-dir",
            bin_dir.to_str().unwrap(),
            "--config-dir",
            cfg_dir.to_str().unwrap(),
            "--socket",
            "/run/test/shim.sock",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");

    let installed = bin_dir.join(SHIM);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&shim).unwrap()
    );
    assert_eq!(mode(&installed), 0o755);
    // No temporary file left beside it.
    let names: Vec<_> = std::fs::read_dir(&bin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [SHIM], "{names:?}");

    let cfg_path = cfg_dir.join("shim-jail.toml");
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["socket"].as_str(), Some("unix:///run/test/shim.sock"));
    assert_eq!(cfg["driver"].as_str(), Some("jail"));
    let paths: Vec<_> = cfg["host_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/var/lib/containerd",
            "/run/containerd",
            "/var/lib/kubelet/pods"
        ]
    );

    // stdout is the snippet alone: valid TOML naming the runtime type and the options file.
    let snippet: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rt = &snippet["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["bulkhead"];
    assert_eq!(
        rt["runtime_type"].as_str(),
        Some("io.containerd.bulkhead.v2")
    );
    assert_eq!(
        rt["options"]["ConfigPath"].as_str(),
        Some(cfg_path.to_str().unwrap())
    );
    assert!(err.contains("restart containerd"), "{err}");

    // Again: an install over an install replaces the files (same content, still 0755).
    let o = run(
        Path::new(BIN),
        &[
            "shim",
            "install",
            "--bin-dir",
            bin_dir.to_str().unwrap(),
            "--config-dir",
            cfg_dir.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(mode(&installed), 0o755);
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    assert_eq!(
        cfg["socket"].as_str(),
        Some("unix:///run/bulkhead/shim.sock")
    );
}

#[test]
fn install_qemu_drop_in_is_merged_by_containerd() {
    let Some(_) = built_shim() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop_in = d.join("containerd/conf.d/bulkhead-vm.toml");
    let o = run(
        Path::new(BIN),
        &[
            "shim",
            "install",
            "--bin-dir",
            d.join("bin").to_str().unwrap(),
            "--config-dir",
            d.join("etc").to_str().unwrap(),
            "--driver",
            "qemu",
            "--host-path",
            "/var/lib/containerd",
            "--containerd-config",
            drop_in.to_str().unwrap(),
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.is_empty(),
        "the snippet went to the file, not stdout: {out}"
    );
    assert!(err.contains("imports = ["), "says how to include it: {err}");
    let cfg_path = d.join("etc/shim-qemu.toml");
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["driver"].as_str(), Some("qemu"));
    assert_eq!(cfg["host_paths"].as_array().unwrap().len(), 1);
    let snippet: toml::Table = toml::from_str(&std::fs::read_to_string(&drop_in).unwrap()).unwrap();
    assert_eq!(snippet["version"].as_integer(), Some(2));
    let rt =
        &snippet["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["bulkhead-vm"];
    assert_eq!(
        rt["runtime_type"].as_str(),
        Some("io.containerd.bulkhead.v2")
    );
    assert_eq!(
        rt["options"]["ConfigPath"].as_str(),
        Some(cfg_path.to_str().unwrap())
    );

    // containerd itself reads it through `imports` (config dump starts no daemon).
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: containerd is not installed; the drop-in was only parsed");
        return;
    }
    let main = d.join("config.toml");
    std::fs::write(
        &main,
        format!("version = 2\nimports = [{:?}]\n", drop_in.to_str().unwrap()),
    )
    .unwrap();
    let o = Command::new("containerd")
        .args(["--config", main.to_str().unwrap(), "config", "dump"])
        .output()
        .unwrap();
    let (dump, derr) = text(&o);
    assert!(o.status.success(), "{dump}{derr}");
    let dump: toml::Table = toml::from_str(&dump).unwrap();
    let rt = &dump["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["bulkhead-vm"];
    assert_eq!(
        rt["runtime_type"].as_str(),
        Some("io.containerd.bulkhead.v2"),
        "{rt:?}"
    );
    assert_eq!(
        rt["options"]["ConfigPath"].as_str(),
        Some(cfg_path.to_str().unwrap())
    );
}

#[test]
fn install_without_a_shim_beside_bulkhead_says_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("bulkhead");
    std::fs::copy(BIN, &lone).unwrap();
    let o = run(
        &lone,
        &[
            "shim",
            "install",
            "--bin-dir",
            dir.path().join("bin").to_str().unwrap(),
            "--config-dir",
            dir.path().join("etc").to_str().unwrap(),
        ],
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(
        err.contains("no containerd-shim-bulkhead-v2 beside")
            && err.contains("cargo build --release"),
        "{err}"
    );
    assert!(
        !dir.path().join("bin").exists() && !dir.path().join("etc").exists(),
        "nothing written"
    );
}

#[test]
fn install_refuses_a_relative_socket() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        Path::new(BIN),
        &[
            "shim",
            "install",
            "--bin-dir",
            dir.path().to_str().unwrap(),
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--socket",
            "shim.sock",
        ],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("--socket") && err.contains("absolute"),
        "{err}"
    );
}
