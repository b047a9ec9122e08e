//! The CRI client and lab settings for `e2e_cri.rs` (#16, D): k8s-cri's tonic clients over
//! containerd's UNIX socket, the CRI plugin's config for the containerd lab
//! (`common::containerd`), the shim's options file, pod and container configs as kubelet
//! would send them, and the clean-up of CRI's `k8s.io` namespace for a test that failed.
//!
//! Invariants: everything CRI makes for the lab stays in the lab's directories or its network
//! namespace (pod network namespaces under its state dir, a CNI bridge in its namespace, IPAM
//! state in its directory); runc pods' cgroups go under a parent named after the lab.

#![allow(dead_code)]

use crate::common::containerd::{tail, Containerd};
use crate::common::oci::{write_test_images, BUSYBOX, PAUSE};
use crate::common::shared::Shared;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, KeyValue,
    LinuxContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListImagesRequest, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI runtime handlers the lab's containerd knows.
pub const RUNC: &str = "runc";
pub const BULKHEAD: &str = "bulkhead";

/// The CRI plugin's section of the lab's config: the test's pause image, the lab's own CNI
/// config (a bridge in the lab's network namespace, never the host's), runc, and the bulkhead
/// runtime whose options file is `shim_config` (written before the first pod: the shim reads
/// it at Create). `restrict_oom_score_adj`: CRI gives the pause container -998, which needs
/// CAP_SYS_RESOURCE; hosts (and CI containers) without it fail every runc pod otherwise.
pub fn cri_toml(lab_dir: &Path, shim_config: &Path) -> String {
    let cni = lab_dir.join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    // CNI needs an interface with an address for the pod (containerd 1.6 fails a pod without
    // one): a bridge in containerd's network namespace (the lab's) with host-local addresses
    // whose state stays in the lab's directory.
    std::fs::write(
        cni.join("10-bh.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "bh-cri", "plugins": [
  {{"type": "bridge", "bridge": "bhcri0", "isGateway": false, "ipMasq": false,
    "ipam": {{"type": "host-local", "dataDir": "{}", "ranges": [[{{"subnet": "10.217.0.0/24"}}]]}}}},
  {{"type": "loopback"}}
]}}"#,
            lab_dir.join("cni-ipam").display()
        ),
    )
    .unwrap();
    let t = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        "[{t}]\n  sandbox_image = \"{PAUSE}\"\n  netns_mounts_under_state_dir = true\n  disable_apparmor = true\n  restrict_oom_score_adj = true\n  stream_server_port = \"0\"\n\
         [{t}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{}\"\n\
         [{t}.containerd]\n  default_runtime_name = \"runc\"\n\
         [{t}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         [{t}.containerd.runtimes.bulkhead]\n  runtime_type = \"io.containerd.bulkhead.v2\"\n\
         [{t}.containerd.runtimes.bulkhead.options]\n  ConfigPath = \"{}\"\n",
        cni.display(),
        shim_config.display()
    )
}

/// The shim's options file: the daemon's `api.shim` socket, jail nodes, and the host paths
/// CRI's own files come from: containerd's default dirs and the lab's containerd root (CRI
/// keeps each sandbox's `hosts`, `hostname` and `resolv.conf` under it; the shim adds
/// containerd's state dir itself).
pub fn write_shim_config(path: &Path, socket: &Path, c: &Containerd) {
    std::fs::write(
        path,
        format!(
            "socket = \"unix://{}\"\ndriver = \"jail\"\nhost_paths = [\"/var/lib/containerd\", \"/run/containerd\", \"/var/lib/kubelet/pods\", \"{}\"]\n",
            socket.display(),
            c.root.display()
        ),
    )
    .unwrap();
}

/// A CRI client on containerd's socket.
pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    /// A directory for pod logs.
    pub logs: PathBuf,
    /// The cgroup parent of the lab's pods (runc's cgroups, removed at the end).
    pub cgroup_parent: String,
}

pub async fn connect(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connect to containerd's CRI socket")
}

/// `ctr --namespace k8s.io ARGS` against the lab's containerd (CRI's namespace).
pub fn ctr_k8s(c: &Containerd, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(&c.address)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .stdin(std::process::Stdio::null());
    crate::common::containerd::run_timeout(cmd, Duration::from_secs(60), &format!("ctr {args:?}"))
}

/// For a test that fails halfway: kills and deletes what CRI left in `k8s.io` (the lab's own
/// clean-up covers its own namespace only) and removes the runc pods' cgroups, before the lab
/// stops containerd and its shims.
pub struct K8sCleanup<'a>(pub &'a Containerd);

impl Drop for K8sCleanup<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let ls = |what: &str| -> Vec<String> {
            String::from_utf8_lossy(&ctr_k8s(self.0, &[what, "ls", "-q"]).stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        for t in ls("task") {
            let _ = ctr_k8s(self.0, &["task", "kill", "-a", "-s", "SIGKILL", &t]);
            let _ = ctr_k8s(self.0, &["task", "delete", "-f", &t]);
        }
        for c in ls("container") {
            let _ = ctr_k8s(self.0, &["container", "delete", &c]);
        }
        // runc pods' cgroups, then their parent (named after the lab).
        for d in crate::common::containerd::cgroup_dirs(&format!("{}-cri", self.0.namespace)) {
            if let Ok(r) = std::fs::read_dir(&d) {
                for e in r.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// Imports the test images into containerd's `k8s.io` namespace (where CRI looks).
pub fn import_images(c: &Containerd) {
    let archive = write_test_images(c.dir.path());
    let o = ctr_k8s(c, &["image", "import", archive.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "ctr -n k8s.io image import: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn pod_config(cri: &Cri, name: &str, namespace: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: cri.logs.join(name).to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cri.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

pub fn container_config(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        envs: vec![KeyValue {
            key: "GREETING".into(),
            value: "hello from cri".into(),
        }],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

impl Cri {
    pub async fn new(c: &Containerd) -> Cri {
        let ch = connect(&c.address).await;
        let logs = c.dir.path().join("pod-logs");
        std::fs::create_dir_all(&logs).unwrap();
        Cri {
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
            logs,
            cgroup_parent: format!("/{}-cri", c.namespace),
        }
    }

    pub async fn run_pod(
        &mut self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        std::fs::create_dir_all(&config.log_directory).unwrap();
        let r = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: handler.into(),
            })
            .await?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// CreateContainer and StartContainer of `config` in the pod.
    pub async fn start_container(
        &mut self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let id = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await?
            .into_inner()
            .container_id;
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        Ok(id)
    }

    pub async fn exec(&mut self, container: &str, script: &str) -> ExecSyncResponse {
        self.rt
            .exec_sync(ExecSyncRequest {
                container_id: container.into(),
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                timeout: 60,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}"))
            .into_inner()
    }

    pub async fn state(&mut self, container: &str) -> ContainerState {
        let s = self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: container.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        ContainerState::try_from(s.state).unwrap()
    }

    pub async fn remove_pod(&mut self, pod: &str) {
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    }

    /// Pods and containers CRI still lists.
    pub async fn listed(&mut self) -> (usize, usize) {
        let pods = self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items
            .len();
        let ctrs = self
            .rt
            .list_containers(ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers
            .len();
        (pods, ctrs)
    }
}

pub fn out(r: &ExecSyncResponse) -> String {
    format!(
        "exit {}: {}{}",
        r.exit_code,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    )
}

/// Waits until `f` holds, up to `secs`.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks CRI sees both test images.
pub async fn images_listed(cri: &mut Cri, c: &Containerd) {
    let images = cri
        .img
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap_or_else(|e| panic!("ListImages: {e}\ncontainerd log:\n{}", tail(&c.log(), 40)))
        .into_inner()
        .images;
    for want in [BUSYBOX, PAUSE] {
        assert!(
            images.iter().any(|i| i.repo_tags.iter().any(|t| t == want)),
            "CRI does not see {want}: {images:?}"
        );
    }
}

/// runc's pod cgroups live under the lab's cgroup parent; CRI removes the pods' own, the
/// parent is the test's to remove (empty by now).
pub fn remove_cgroup_parent(c: &Containerd) {
    let name = format!("{}-cri", c.namespace);
    for d in crate::common::containerd::cgroup_dirs(&name) {
        let left: Vec<_> = std::fs::read_dir(&d)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "pod cgroups left in {}: {left:?}",
            d.display()
        );
        let _ = std::fs::remove_dir(&d);
    }
}

/// The pod's address on its network, from inside it.
pub async fn pod_ip(cri: &mut Cri, ctr: &str) -> String {
    let r = cri
        .exec(
            ctr,
            "ip -4 -o addr show | grep -v ' lo ' | awk '{print $4}' | cut -d/ -f1 | head -1",
        )
        .await;
    let ip = String::from_utf8_lossy(&r.stdout).trim().to_string();
    assert!(!ip.is_empty(), "no address in the pod: {}", out(&r));
    ip
}

/// Starts `nc -l` on PORT in the container, answering `word`, and waits until it listens
/// (on IPv4 or IPv6: busybox's nc binds `::` where the node has IPv6).
pub async fn listen(cri: &mut Cri, ctr: &str, word: &str) {
    let r = cri
        .exec(
            ctr,
            &format!(
                "setsid nc -ll -p 7777 -e echo {word} </dev/null >/dev/null 2>&1 & \
                 for i in $(seq 100); do cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':1E61 [0-9A-F]*:0000 0A' && exit 0; sleep 0.05; done; ps; cat /proc/net/tcp*; exit 1"
            ),
        )
        .await;
    assert_eq!(r.exit_code, 0, "listener: {}", out(&r));
}

pub async fn connect_from(cri: &mut Cri, ctr: &str, ip: &str) -> ExecSyncResponse {
    cri.exec(ctr, &format!("nc -w 3 {ip} 7777 </dev/null"))
        .await
}

/// The nodes tenant `t` holds (its own socket's `vm list`).
pub fn nodes_of(s: &Shared, t: &str) -> Vec<String> {
    let o = s.vm(&s.tenant_sock(t), &["list", "--json"]);
    assert!(
        o.status.success(),
        "vm list: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    v.iter()
        .map(|n| n["hostname"].as_str().unwrap_or_default().to_string())
        .collect()
}
