//! The CRI path kubelet uses (#16, D): Debian's containerd with its CRI plugin, started by the
//! test in a network namespace of its own (the containerd lab, `common::containerd`), driven by
//! a CRI v1 client (k8s-cri's tonic client over containerd's UNIX socket), as kubelet would:
//! RunPodSandbox, CreateContainer, StartContainer, ExecSync, ContainerStatus, StopPodSandbox,
//! RemovePodSandbox. The lab, the images and the CNI config are proven first with Debian's runc
//! (runtime handler `runc`); then the same flow runs with handler `bulkhead`
//! (`containerd-shim-bulkhead-v2`, its options file naming a test daemon's `api.shim` socket).
//! Two pods of two Kubernetes namespaces mapped to two tenants cannot reach each other; a
//! privileged or hostNetwork pod is refused with a clear error.
//!
//! containerd's CRI plugin keeps pods in its own namespace `k8s.io` (of the lab's own root and
//! state); pod network namespaces are made under the lab's state dir
//! (`netns_mounts_under_state_dir`); the CNI config is the lab's own (`conf_dir` in the lab's
//! directory, Debian's plugins from `/usr/lib/cni`, IPAM state in the lab's directory).

mod common;
mod cri_client;

use common::containerd::{shim_daemon_yaml, tail, Containerd, Lab, LabConfig};
use common::netlab::Netns;
use common::shared::Shared;
use cri_client::*;
use k8s_cri::v1::{
    ContainerState, LinuxContainerConfig, LinuxContainerSecurityContext, NamespaceMode,
};
use std::path::Path;

/// The pod lifecycle kubelet drives, under `handler`: a pod, a container whose output reaches
/// its CRI log, ExecSync with stdout, stderr and exit code, ContainerStatus, stop and remove,
/// with nothing listed after.
async fn pod_lifecycle(cri: &mut Cri, c: &Containerd, handler: &str) {
    let name = format!("life-{handler}");
    let pc = pod_config(cri, &name, "default");
    let pod = cri
        .run_pod(pc.clone(), handler)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox ({handler}): {e}\n{}", tail(&c.log(), 30)));
    let ctr = cri
        .start_container(
            &pod,
            &pc,
            container_config("main", "echo started $GREETING; exec sleep 3600"),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Create/StartContainer ({handler}): {e}\n{}",
                tail(&c.log(), 30)
            )
        });
    assert_eq!(cri.state(&ctr).await, ContainerState::ContainerRunning);

    let r = cri
        .exec(
            &ctr,
            "echo out; echo err >&2; id -u; echo $GREETING; exit 3",
        )
        .await;
    assert_eq!(r.exit_code, 3, "{}", out(&r));
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "out\n0\nhello from cri\n",
        "{}",
        out(&r)
    );
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n", "{}", out(&r));
    // The container's root is the image's, not the node's or the host's.
    let r = cri
        .exec(
            &ctr,
            "cat /etc/passwd | grep -c ^user: ; test -x /bin/busybox && echo bb",
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&r.stdout), "1\nbb\n", "{}", out(&r));

    // The container's stdout reached CRI's log file (through the shim's FIFOs).
    let log = Path::new(&pc.log_directory).join("main.log");
    eventually(
        30,
        &format!("{} holds the container's output", log.display()),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started hello from cri")),
    )
    .await;

    cri.remove_pod(&pod).await;
    assert_eq!(
        cri.listed().await,
        (0, 0),
        "{handler}: pods or containers left"
    );
}

/// Debian's runc through the same lab and flow: the lab, the images and the CNI config are
/// sound, so a failure of the bulkhead cases is the shim's or the daemon's.
#[test]
fn cri_pod_lifecycle_with_runc() {
    if !common::privileged() {
        return;
    }
    let lab_dir = common::test_dir();
    let unused = lab_dir.path().join("shim-unused.toml");
    let netns = Netns::new();
    let c = Containerd::start(
        &netns.path(),
        LabConfig {
            cri: Some(cri_toml(lab_dir.path(), &unused)),
            bulkhead_url: None,
        },
    );
    import_images(&c);
    let guard = K8sCleanup(&c);
    common::rt().block_on(async {
        let mut cri = Cri::new(&c).await;
        images_listed(&mut cri, &c).await;
        pod_lifecycle(&mut cri, &c, RUNC).await;
    });
    drop(guard);
    remove_cgroup_parent(&c);
    c.stop_and_assert_clean();
}

/// The pod lifecycle through `containerd-shim-bulkhead-v2` and a test daemon's `api.shim`
/// listener (a one-tenant daemon: every namespace is its tenant's).
#[test]
fn cri_pod_lifecycle() {
    if !common::privileged() {
        return;
    }
    let shim_dir = common::test_dir();
    let shim_cfg = shim_dir.path().join("shim-jail.toml");
    // The lab writes its CRI config before the daemon's socket is known: the options file's
    // path goes into containerd's config, its content right after the daemon started.
    let lab_dir = common::test_dir();
    let lab = Lab::start(
        "cri",
        &shim_daemon_yaml(false),
        Some(cri_toml(lab_dir.path(), &shim_cfg)),
    );
    write_shim_config(&shim_cfg, &lab.daemon.shim_socket(), &lab.containerd);
    import_images(&lab.containerd);
    let guard = K8sCleanup(&lab.containerd);
    common::rt().block_on(async {
        let mut cri = Cri::new(&lab.containerd).await;
        images_listed(&mut cri, &lab.containerd).await;
        pod_lifecycle(&mut cri, &lab.containerd, BULKHEAD).await;
    });
    drop(guard);
    let nodes = lab.daemon.vm_ok(&["list"]);
    assert!(
        nodes.lines().count() <= 1,
        "nodes left in the daemon: {nodes}"
    );
    remove_cgroup_parent(&lab.containerd);
    lab.stop_and_assert_clean();
}

#[test]
fn pods_of_two_namespaces_cannot_reach_each_other() {
    if !common::privileged() {
        return;
    }
    let shim_dir = common::test_dir();
    let socket = shim_dir.path().join("shim.sock");
    let shim_cfg = shim_dir.path().join("shim-jail.toml");
    // Two tenants, each with an isolated network, and the namespace → tenant mapping.
    let groups = [
        "          network: { mode: isolated, range: 10.216.0.0/24 }\n",
        "          network: { mode: isolated, range: 10.216.1.0/24 }\n",
    ];
    let (a, b) = (common::unique_tenant("cria"), common::unique_tenant("crib"));
    let list: String = [(&a, groups[0]), (&b, groups[1])]
        .iter()
        .map(|(t, k)| format!("    - name: {t}\n      host_groups:\n        - name: {t}\n          ram_mb: 128\n{k}"))
        .collect();
    let api = format!(
        "    shim:\n      socket: {}\n      namespaces:\n        ns-a: {a}\n        ns-b: {b}\n",
        socket.display()
    );
    let shared = Shared::start_listed_api(vec![a, b], &list, "", &api);
    let netns = Netns::new();
    let lab_dir = common::test_dir();
    let c = Containerd::start(
        &netns.path(),
        LabConfig {
            cri: Some(cri_toml(lab_dir.path(), &shim_cfg)),
            bulkhead_url: None,
        },
    );
    write_shim_config(&shim_cfg, &socket, &c);
    import_images(&c);
    let guard = K8sCleanup(&c);
    common::rt().block_on(async {
        let mut cri = Cri::new(&c).await;
        // A namespace mapped to no tenant is refused, naming the key.
        let pc = pod_config(&cri, "nowhere", "ns-unmapped");
        let e = cri
            .run_pod(pc, BULKHEAD)
            .await
            .expect_err("an unmapped namespace was accepted");
        assert!(e.message().contains("config.api.shim.namespaces"), "{e}");
        let mut pods = Vec::new();
        let mut ctrs = Vec::new();
        for (pod, ns) in [("pa", "ns-a"), ("pb", "ns-b")] {
            let pc = pod_config(&cri, pod, ns);
            let id = cri
                .run_pod(pc.clone(), BULKHEAD)
                .await
                .unwrap_or_else(|e| panic!("RunPodSandbox {pod}: {e}\n{}", tail(&c.log(), 30)));
            let ctr = cri
                .start_container(&id, &pc, container_config("main", "exec sleep 3600"))
                .await
                .unwrap_or_else(|e| panic!("container of {pod}: {e}\n{}", tail(&c.log(), 30)));
            pods.push(id);
            ctrs.push(ctr);
        }
        let ip_a = pod_ip(&mut cri, &ctrs[0]).await;
        let ip_b = pod_ip(&mut cri, &ctrs[1]).await;
        assert_ne!(ip_a, ip_b);
        listen(&mut cri, &ctrs[0], "from-a").await;
        listen(&mut cri, &ctrs[1], "from-b").await;
        // Inside each pod the listener answers on the pod's own address.
        let r = connect_from(&mut cri, &ctrs[0], &ip_a).await;
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            "from-a",
            "{}",
            out(&r)
        );
        let r = connect_from(&mut cri, &ctrs[1], &ip_b).await;
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            "from-b",
            "{}",
            out(&r)
        );
        // Across tenants, neither way.
        let r = connect_from(&mut cri, &ctrs[1], &ip_a).await;
        assert!(
            !String::from_utf8_lossy(&r.stdout).contains("from-a"),
            "b reached a: {}",
            out(&r)
        );
        let r = connect_from(&mut cri, &ctrs[0], &ip_b).await;
        assert!(
            !String::from_utf8_lossy(&r.stdout).contains("from-b"),
            "a reached b: {}",
            out(&r)
        );
        // Each pod is a node of its own tenant.
        for (t, pod) in [(&shared.a, "pa"), (&shared.b, "pb")] {
            let nodes = nodes_of(&shared, t);
            assert_eq!(
                nodes.len(),
                1,
                "tenant {t} holds {nodes:?}, expected the node of {pod}"
            );
        }
        for p in pods {
            cri.remove_pod(&p).await;
        }
        assert_eq!(cri.listed().await, (0, 0));
    });
    for t in [&shared.a, &shared.b] {
        assert!(nodes_of(&shared, t).is_empty(), "nodes of {t} left");
    }
    drop(guard);
    remove_cgroup_parent(&c);
    c.stop_and_assert_clean();
    shared.stop_and_assert_clean();
}

#[test]
fn privileged_and_host_network_pods_are_refused() {
    if !common::privileged() {
        return;
    }
    let shim_dir = common::test_dir();
    let shim_cfg = shim_dir.path().join("shim-jail.toml");
    let lab_dir = common::test_dir();
    let lab = Lab::start(
        "crino",
        &shim_daemon_yaml(false),
        Some(cri_toml(lab_dir.path(), &shim_cfg)),
    );
    write_shim_config(&shim_cfg, &lab.daemon.shim_socket(), &lab.containerd);
    import_images(&lab.containerd);
    let guard = K8sCleanup(&lab.containerd);
    common::rt().block_on(async {
        let mut cri = Cri::new(&lab.containerd).await;
        // hostNetwork: the sandbox shares the host's network namespace.
        let mut pc = pod_config(&cri, "hostnet", "default");
        if let Some(ns) = pc
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.network = NamespaceMode::Node as i32;
        }
        let e = cri
            .run_pod(pc, BULKHEAD)
            .await
            .expect_err("a hostNetwork pod was accepted");
        // The shim's refusal names the field and the pod setting (crates/shim/src/spec.rs).
        eprintln!("hostNetwork pod: {}", e.message());
        assert!(
            e.message().contains("linux.namespaces: no new network")
                && e.message().contains("hostNetwork"),
            "unclear refusal: {e}"
        );

        // A privileged pod, as kubelet asks for one: the sandbox's security context says
        // privileged and so does the container's (every capability, host devices). CRI may
        // give the pause container no more than usual, so the refusal may come at either step.
        let mut pc = pod_config(&cri, "priv", "default");
        if let Some(s) = pc.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            s.privileged = true;
        }
        let mut cc = container_config("main", "exec sleep 3600");
        cc.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let refused = match cri.run_pod(pc.clone(), BULKHEAD).await {
            Err(e) => e,
            Ok(pod) => {
                let e = cri
                    .start_container(&pod, &pc, cc)
                    .await
                    .expect_err("a privileged container was accepted");
                cri.remove_pod(&pod).await;
                e
            }
        };
        eprintln!("privileged pod: {}", refused.message());
        assert!(
            refused.message().contains("process.capabilities")
                && refused.message().contains("no privileged containers"),
            "unclear refusal: {refused}"
        );
        assert_eq!(cri.listed().await, (0, 0));
    });
    let nodes = lab.daemon.vm_ok(&["list"]);
    assert!(
        nodes.lines().count() <= 1,
        "nodes left in the daemon: {nodes}"
    );
    drop(guard);
    remove_cgroup_parent(&lab.containerd);
    lab.stop_and_assert_clean();
}
