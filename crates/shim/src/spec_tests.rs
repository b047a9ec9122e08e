//! Fixtures are shaped like containerd 1.6's own specs: `ctr run`'s default spec
//! (populateDefaultUnixSpec + WithDefaultUnixDevices), CRI's sandbox (pause) and container specs.

use super::*;
use serde_json::{json, Value};

const CRI_CAPS: &str = r#"["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD",
 "CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE",
 "CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"]"#;

fn ctr_default() -> Value {
    let caps: Value = serde_json::from_str(CRI_CAPS).unwrap();
    json!({
      "ociVersion": "1.0.2-dev",
      "process": {
        "user": {"uid": 0, "gid": 0},
        "args": ["sh", "-c", "echo hello"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": true
      },
      "root": {"path": "rootfs"},
      "hostname": "",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
      ],
      "linux": {
        "resources": {"devices": [{"allow": false, "access": "rwm"},
                                  {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]},
        "cgroupsPath": "/default/web",
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
        "devices": [
          {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0},
          {"path": "/dev/random", "type": "c", "major": 1, "minor": 8, "fileMode": 438, "uid": 0, "gid": 0},
          {"path": "/dev/full", "type": "c", "major": 1, "minor": 7, "fileMode": 438, "uid": 0, "gid": 0},
          {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0, "fileMode": 438, "uid": 0, "gid": 0},
          {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 438, "uid": 0, "gid": 0},
          {"path": "/dev/urandom", "type": "c", "major": 1, "minor": 9, "fileMode": 438, "uid": 0, "gid": 0}
        ],
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/sys"]
      }
    })
}

const SB: &str = "5d1c2a7e0f9b4c3d8e6f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
const UID: &str = "0d6f2b0c-1a2b-4c3d-8e9f-001122334455";

fn cri_sandbox() -> Value {
    let caps: Value = serde_json::from_str(CRI_CAPS).unwrap();
    json!({
      "ociVersion": "1.0.2-dev",
      "process": {
        "user": {"uid": 65535, "gid": 65535, "additionalGids": [65535]},
        "args": ["/pause"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": true,
        "oomScoreAdj": -998
      },
      "root": {"path": "rootfs", "readonly": true},
      "hostname": "web-0",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/shm", "type": "bind", "source": format!("/run/containerd/io.containerd.grpc.v1.cri/sandboxes/{SB}/shm"), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": format!("/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/{SB}/resolv.conf"), "options": ["rbind", "ro"]}
      ],
      "annotations": {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": SB,
        "io.kubernetes.cri.sandbox-log-directory": format!("/var/log/pods/team-a_web-0_{UID}"),
        "io.kubernetes.cri.sandbox-name": "web-0",
        "io.kubernetes.cri.sandbox-namespace": "team-a"
      },
      "linux": {
        "resources": {"devices": [{"allow": false, "access": "rwm"}], "cpu": {"shares": 2}},
        "cgroupsPath": format!("/k8s.io/{SB}"),
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                       {"type": "network", "path": "/var/run/netns/cni-7d3e4f5a-0b1c-2d3e-4f5a-6b7c8d9e0f1a"}],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                    "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]},
        "maskedPaths": ["/proc/acpi", "/proc/kcore"],
        "readonlyPaths": ["/proc/bus", "/proc/sys"]
      }
    })
}

fn cri_container() -> Value {
    let caps: Value = serde_json::from_str(CRI_CAPS).unwrap();
    let pods = format!("/var/lib/kubelet/pods/{UID}");
    let sbdir = format!("/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/{SB}");
    json!({
      "ociVersion": "1.0.2-dev",
      "process": {
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 2000]},
        "args": ["/bin/sh", "-c", "sleep 3600"],
        "env": ["PATH=/bin", "HOSTNAME=web-0", "KUBERNETES_SERVICE_HOST=10.96.0.1"],
        "cwd": "/app",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "apparmorProfile": "cri-containerd.apparmor.d",
        "oomScoreAdj": 1000
      },
      "root": {"path": "rootfs"},
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/etc/hosts", "type": "bind", "source": format!("{pods}/etc-hosts"), "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/dev/termination-log", "type": "bind", "source": format!("{pods}/containers/app/1a2b3c4d"), "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/etc/hostname", "type": "bind", "source": format!("{sbdir}/hostname"), "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": format!("{sbdir}/resolv.conf"), "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/dev/shm", "type": "bind", "source": format!("/run/containerd/io.containerd.grpc.v1.cri/sandboxes/{SB}/shm"), "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": format!("{pods}/volumes/kubernetes.io~projected/kube-api-access-x7k2p"), "options": ["rbind", "rprivate", "ro"]}
      ],
      "annotations": {
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.image-name": "bulkhead.test/busybox:1",
        "io.kubernetes.cri.sandbox-id": SB,
        "io.kubernetes.cri.sandbox-name": "web-0",
        "io.kubernetes.cri.sandbox-namespace": "team-a"
      },
      "linux": {
        "resources": {"devices": [{"allow": false, "access": "rwm"}],
                      "memory": {"limit": 134217728},
                      "cpu": {"shares": 256, "quota": 150000, "period": 100000},
                      "pids": {"limit": 512}},
        "cgroupsPath": format!("/k8s.io/{}", "c".repeat(64)),
        "namespaces": [{"type": "pid"}, {"type": "ipc", "path": "/proc/4242/ns/ipc"},
                       {"type": "uts", "path": "/proc/4242/ns/uts"}, {"type": "mount"},
                       {"type": "network", "path": "/proc/4242/ns/net"}],
        "maskedPaths": ["/proc/acpi"],
        "readonlyPaths": ["/proc/sys"]
      }
    })
}

fn spec(v: &Value) -> Spec {
    serde_json::from_value(v.clone()).unwrap()
}

fn plan_of(v: &Value) -> Result<Plan, Refusal> {
    plan(&spec(v), &ShimConfig::default())
}

fn refusal(v: &Value) -> String {
    plan_of(v).unwrap_err().to_string()
}

fn m(dest: &str, kind: MountKind, read_only: bool) -> ContainerMount {
    ContainerMount {
        destination: dest.into(),
        kind,
        read_only,
        size_bytes: None,
        mode: None,
    }
}

#[test]
fn ctr_default_spec_is_a_standalone_plan() {
    let p = plan_of(&ctr_default()).unwrap();
    assert_eq!(p.kind, Kind::Standalone);
    assert_eq!(p.process.args, ["sh", "-c", "echo hello"]);
    assert_eq!(p.process.cwd, "/");
    assert_eq!((p.process.uid, p.process.gid), (0, 0));
    assert_eq!(
        p.process.rlimits,
        [("RLIMIT_NOFILE".to_string(), 1024, 1024)]
    );
    assert!(!p.process.terminal);
    assert!(!p.readonly);
    assert_eq!(p.hostname, None);
    assert_eq!((p.ram_bytes, p.cpus, p.pids), (None, None, None));
    assert!(p.host_files.is_empty());
    let tmpfs = |d: &str, mode| ContainerMount {
        size_bytes: Some(64 << 20),
        mode: Some(mode),
        ..m(d, MountKind::Tmpfs, false)
    };
    assert_eq!(
        p.mounts,
        vec![
            m("/proc", MountKind::Proc, false),
            m("/dev", MountKind::Dev, false),
            m("/dev/pts", MountKind::Devpts, false),
            tmpfs("/dev/shm", 0o1777),
            m("/dev/mqueue", MountKind::Mqueue, false),
            m("/sys", MountKind::Sys, true),
            tmpfs("/run", 0o755),
        ]
    );
}

#[test]
fn cri_sandbox_plan() {
    let p = plan_of(&cri_sandbox()).unwrap();
    assert_eq!(
        p.kind,
        Kind::Sandbox {
            namespace: "team-a".into(),
            pod: "web-0".into(),
            sandbox_id: SB.into()
        }
    );
    assert!(p.readonly);
    assert_eq!(p.hostname.as_deref(), Some("web-0"));
    assert_eq!(
        (p.process.uid, p.process.gid, &p.process.groups[..]),
        (65535, 65535, &[65535][..])
    );
    // The pod netns path is ignored (the node has its own network); shm becomes a tmpfs.
    assert!(p.mounts.contains(&ContainerMount {
        mode: Some(0o1777),
        ..m("/dev/shm", MountKind::Tmpfs, true)
    }));
    assert_eq!(
        p.host_files,
        vec![HostFile {
            host: format!(
                "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/{SB}/resolv.conf"
            )
            .into(),
            dest: "/etc/resolv.conf".into()
        }]
    );
    assert_eq!((p.ram_bytes, p.cpus), (None, None));
    // Pod-level size from CRI's annotations, where containerd passes them.
    let mut v = cri_sandbox();
    let ann = v["annotations"].as_object_mut().unwrap();
    ann.insert(ANN_SANDBOX_MEMORY.into(), json!("268435456"));
    ann.insert(ANN_SANDBOX_CPU_QUOTA.into(), json!("250000"));
    ann.insert(ANN_SANDBOX_CPU_PERIOD.into(), json!("100000"));
    let p = plan_of(&v).unwrap();
    assert_eq!((p.ram_bytes, p.cpus), (Some(256 << 20), Some(3)));
    v["annotations"][ANN_SANDBOX_MEMORY] = json!("lots");
    assert!(refusal(&v).contains(ANN_SANDBOX_MEMORY));
}

#[test]
fn cri_container_plan() {
    let p = plan_of(&cri_container()).unwrap();
    assert_eq!(
        p.kind,
        Kind::Container {
            namespace: "team-a".into(),
            sandbox_id: SB.into()
        }
    );
    assert_eq!(p.process.cwd, "/app");
    assert_eq!(p.process.groups, [1000, 2000]);
    assert_eq!(
        (p.ram_bytes, p.cpus, p.pids),
        (Some(128 << 20), Some(2), Some(512))
    );
    // cgroup skipped; /proc/<sandbox pid>/ns paths ignored.
    assert!(!p.mounts.iter().any(|m| m.destination == "/sys/fs/cgroup"));
    let dests: Vec<&str> = p.host_files.iter().map(|h| h.dest.as_str()).collect();
    assert_eq!(
        dests,
        [
            "/etc/hosts",
            "/dev/termination-log",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/var/run/secrets/kubernetes.io/serviceaccount"
        ]
    );
    assert!(p.host_files[0].host.starts_with("/var/lib/kubelet/pods"));
    check_fits(&p, 256 << 20, 2).unwrap();
    let e = check_fits(&p, 64 << 20, 2).unwrap_err().to_string();
    assert!(e.contains("memory.limit") && e.contains("134217728"), "{e}");
    let e = check_fits(&p, 256 << 20, 1).unwrap_err().to_string();
    assert!(e.contains("cpu"), "{e}");
    // Without the namespace annotation the caller takes the sandbox's.
    let mut v = cri_container();
    v["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(ANN_SANDBOX_NAMESPACE);
    assert!(
        matches!(plan_of(&v).unwrap().kind, Kind::Container { namespace, .. } if namespace.is_empty())
    );
}

#[test]
fn host_namespaces_refused() {
    for ns in ["network", "pid", "ipc", "uts"] {
        let mut v = ctr_default();
        let list = v["linux"]["namespaces"].as_array_mut().unwrap();
        list.retain(|n| n["type"] != ns);
        let e = refusal(&v);
        assert!(
            e.starts_with("linux.namespaces:") && e.contains(ns),
            "{ns}: {e}"
        );
    }
    for path in [
        "/proc/1/ns/net",
        "/proc/self/ns/net",
        "/proc/thread-self/ns/net",
        "//proc/1/ns/net",
        "/proc/./1/ns/net",
        "/proc/4242/../1/ns/net",
    ] {
        let mut v = cri_sandbox();
        v["linux"]["namespaces"][4]["path"] = json!(path);
        let e = refusal(&v);
        assert!(e.contains("is the host's"), "{path}: {e}");
    }
    let mut v = ctr_default();
    v.as_object_mut().unwrap().remove("linux");
    assert!(refusal(&v).contains("no linux section"));
}

#[test]
fn capabilities_kept_dropped_refused() {
    // containerd's default set passes (NET_RAW and MKNOD dropped silently): see the fixtures.
    let mut v = cri_container();
    v["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .extend([json!("CAP_SYS_ADMIN"), json!("CAP_NET_ADMIN")]);
    v["process"]["capabilities"]["ambient"] = json!(["CAP_SYS_PTRACE", "CAP_NET_ADMIN"]);
    let e = refusal(&v);
    assert!(
        e.starts_with("process.capabilities CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE:"),
        "{e}"
    );
    assert!(e.contains("SYS_CHROOT"), "{e}");
}

#[test]
fn privileged_ctr_spec_refused() {
    // `ctr run --privileged`: every capability and the host's devices.
    let mut v = ctr_default();
    v["process"]["capabilities"]["bounding"] =
        json!(["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_MODULE"]);
    assert!(refusal(&v).contains("CAP_SYS_ADMIN, CAP_SYS_MODULE"));
    let mut v = ctr_default();
    v["linux"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}));
    v["linux"]["devices"].as_array_mut().unwrap().push(
        // The right name with the wrong numbers is a host device too.
        json!({"path": "/dev/null", "type": "c", "major": 10, "minor": 200}),
    );
    let e = refusal(&v);
    assert!(e.starts_with("linux.devices /dev/sda, /dev/null:"), "{e}");
}

#[test]
fn sysctls_propagation_hooks() {
    let mut v = cri_sandbox();
    v["linux"]["sysctl"] = json!({"net.ipv4.ip_unprivileged_port_start": "0",
                                  "net.ipv4.ping_group_range": "0 2147483647"});
    plan_of(&v).unwrap();
    v["linux"]["sysctl"]["kernel.shm_rmid_forced"] = json!("1");
    v["linux"]["sysctl"]["net.core.somaxconn"] = json!("1024");
    let e = refusal(&v);
    assert!(
        e.starts_with("linux.sysctl kernel.shm_rmid_forced, net.core.somaxconn:"),
        "{e}"
    );

    let mut v = ctr_default();
    v["linux"]["rootfsPropagation"] = json!("rshared");
    assert!(refusal(&v).contains("rootfsPropagation \"rshared\""));
    v["linux"]["rootfsPropagation"] = json!("rslave");
    plan_of(&v).unwrap();

    let mut v = ctr_default();
    v["hooks"] = json!({"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook"}]});
    assert!(refusal(&v).starts_with("hooks:"));
    v["hooks"] = json!({});
    plan_of(&v).unwrap();
}

#[test]
fn mounts_refused_or_mapped() {
    // hostPath volume of /etc: refused naming the source and host_paths.
    let mut v = cri_container();
    v["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/host-etc", "type": "bind", "source": "/etc", "options": ["rbind", "ro"]}),
    );
    let e = refusal(&v);
    assert!(
        e.contains("\"/etc\"") && e.contains("host_paths") && e.contains("/var/lib/kubelet/pods"),
        "{e}"
    );
    // `..` cannot climb out of an allowed prefix; a type "none" bind is a bind.
    for (src, typ) in [
        ("/var/lib/kubelet/pods/../../../etc", "bind"),
        ("/root", "none"),
    ] {
        let mut v = ctr_default();
        v["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/x", "type": typ, "source": src, "options": ["bind"]}));
        assert!(refusal(&v).contains("bind of host path"), "{src}");
    }
    // subPath binds are refused even under host_paths.
    let mut v = cri_container();
    v["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/etc/app.conf", "type": "bind", "options": ["rbind"],
        "source": format!("/var/lib/kubelet/pods/{UID}/volume-subpaths/cfg/app/0")
    }));
    assert!(refusal(&v).contains("subPath"));
    // Shim config's host_paths decide.
    let mut v = ctr_default();
    v["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": "/srv/data/a", "options": ["rbind"]}),
    );
    let cfg = ShimConfig {
        host_paths: vec!["/srv/data".into()],
        ..ShimConfig::default()
    };
    assert_eq!(plan(&spec(&v), &cfg).unwrap().host_files[0].dest, "/data");
    // Other filesystem types are refused, naming the type.
    let mut v = ctr_default();
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/mnt", "type": "nfs", "source": "srv:/x"}));
    assert!(refusal(&v).starts_with("mounts /mnt: type \"nfs\" is refused"));
    // Destinations must be clean absolute paths.
    let mut v = ctr_default();
    v["mounts"][0]["destination"] = json!("/proc/../etc");
    assert!(refusal(&v).contains("without '..'"));
    // tmpfs options.
    for (opt, ok) in [
        ("size=1g", true),
        ("size=50%", false),
        ("mode=abc", false),
        ("size=0", false),
    ] {
        let mut v = ctr_default();
        v["mounts"][6]["options"] = json!([opt]);
        assert_eq!(plan_of(&v).is_ok(), ok, "{opt}");
    }
    assert_eq!(parse_size("1g"), Some(1 << 30));
    assert_eq!(parse_size("4096"), Some(4096));
    assert_eq!(parse_size("k"), None);
}

#[test]
fn process_rules() {
    let mut v = ctr_default();
    v["process"]["args"] = json!([]);
    assert_eq!(
        refusal(&v),
        "process.args is empty: give the command to run"
    );
    let mut v = ctr_default();
    v["process"]["cwd"] = json!("app");
    assert!(refusal(&v).contains("\"app\""));
    let mut v = ctr_default();
    v["process"]["rlimits"] = json!([{"type": "RLIMIT_NPROC", "soft": 10, "hard": 5}]);
    assert!(refusal(&v).starts_with("process.rlimits RLIMIT_NPROC"));
    let mut v = ctr_default();
    v.as_object_mut().unwrap().remove("process");
    assert_eq!(plan_of(&v).unwrap_err(), Refusal::NoProcess);
    // Exec's process spec (what `ctr task exec --tty` sends).
    let exec: Process = serde_json::from_value(json!({
        "terminal": true, "user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": ["TERM=xterm"], "cwd": "/"
    }))
    .unwrap();
    let pp = process_plan(&exec).unwrap();
    assert!(pp.terminal);
    assert!(pp.rlimits.is_empty() && pp.groups.is_empty());
}

#[test]
fn annotations_checked() {
    let mut v = cri_sandbox();
    v["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(ANN_SANDBOX_NAMESPACE);
    assert!(refusal(&v).starts_with(&format!("annotation {ANN_SANDBOX_NAMESPACE}: missing")));
    let mut v = cri_sandbox();
    v["annotations"][ANN_CONTAINER_TYPE] = json!("podvm");
    assert!(refusal(&v).contains("neither"));
    let mut v = cri_container();
    v["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(ANN_SANDBOX_ID);
    assert!(refusal(&v).contains(ANN_SANDBOX_ID));
}

/// `KEPT_CAPS` is the jail's `bulkhead_jail::caps::KEPT`, read from its source.
#[test]
fn kept_caps_match_the_jail() {
    let src = include_str!("../../jail/src/caps.rs");
    let body = &src[src.find("pub const KEPT").unwrap()..];
    let body = &body[..body.find("];").unwrap()];
    let mut names = Vec::new();
    for piece in body.split('(').skip(1) {
        let piece = piece.trim_start();
        let digits = piece.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            continue;
        }
        let rest = piece[digits..]
            .trim_start()
            .strip_prefix(',')
            .unwrap()
            .trim_start();
        let rest = rest.strip_prefix('"').unwrap();
        names.push(&rest[..rest.find('"').unwrap()]);
    }
    assert_eq!(names, KEPT_CAPS);
}

/// containerd's own default spec (`ctr oci spec`, Debian's containerd), where installed.
#[test]
fn ctr_oci_spec_plans() {
    let Ok(out) = std::process::Command::new("ctr")
        .args(["oci", "spec"])
        .output()
    else {
        eprintln!("skipped: no ctr");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan_of(&v).unwrap_err(), Refusal::NoArgs);
    v["process"]["args"] = json!(["true"]);
    let p = plan_of(&v).unwrap();
    assert_eq!(p.kind, Kind::Standalone);
    assert_eq!(p.mounts, plan_of(&ctr_default()).unwrap().mounts);
}
