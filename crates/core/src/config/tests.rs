//! The config's parsing and validation, driven through [`TenantConfig::parse`].

use super::*;
use crate::DaemonConfig;

const SLICER: &str = r#"
config:
  host_groups:
    - name: a3cf
      storage: image
      storage_size: 25G
      count: 0
      vcpu: 2
      ram_gb: 4
      network:
        mode: none
  image: "minimal"
  hypervisor: jail
  graceful_shutdown: false
  api:
    bind_address: "/run/bulkhead/a3cf.sock"
"#;

#[test]
fn loads_slicer_shape() {
    let c = TenantConfig::parse(SLICER).unwrap();
    assert_eq!(c.tenant, "a3cf");
    assert_eq!(c.groups[0].ram_bytes, 4 << 30);
    assert_eq!(c.groups[0].storage_bytes, 25 << 30);
    assert_eq!(c.listen, ApiListen::Unix("/run/bulkhead/a3cf.sock".into()));
}

fn err_of(text: &str) -> String {
    TenantConfig::parse(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_key() {
    let e = err_of(&SLICER.replace("vcpu: 2", "vcpus: 2"));
    assert!(e.contains("host_groups[0]") && e.contains("vcpus"), "{e}");
    let e = err_of(&SLICER.replace("25G", "25Q"));
    assert!(e.contains("host_groups[0].storage_size"), "{e}");
    let e = err_of(&SLICER.replace("mode: none", "mode: none\n        drop: [\"300.1.1.0/24\"]"));
    assert!(e.contains("network.drop[0]"), "{e}");
    let e = err_of(&SLICER.replace("ram_gb: 4", "ram_gb: 4\n      ram_mb: 5"));
    assert!(e.contains("ram_mb") && e.contains("only one"), "{e}");
    let e = err_of(&SLICER.replace("name: a3cf", "name: A3CF"));
    assert!(e.contains("host_groups[0].name"), "{e}");
    let e = err_of(&SLICER.replace("hypervisor: jail", "hypervisor: \"\""));
    assert!(e.contains("config.hypervisor"), "{e}");
    let e = err_of(&SLICER.replace("\"/run/bulkhead/a3cf.sock\"", "\"nowhere\""));
    assert!(e.contains("bind_address"), "{e}");
    let e = err_of("config: [");
    assert!(e.contains("YAML") || e.contains("config"), "{e}");
    let e = err_of(&SLICER.replace("  image:", "  forward_ports: 9000-80\n  image:"));
    assert!(e.contains("config.forward_ports"), "{e}");
    let e = err_of(&SLICER.replace("mode: none", "mode: isolated"));
    assert!(e.contains("network.range"), "{e}");
    let e = err_of(&SLICER.replace(
            "mode: none",
            "mode: isolated\n        range: 10.0.0.0/24\n      dns_servers: [\"10.0.0.9\"]\n      userdata: x",
        ));
    assert!(e.contains("dns_servers") && e.contains("own range"), "{e}");
    let e = err_of(&SLICER.replace("mode: none", "mode: none\n        egress_mbps: 5"));
    assert!(e.contains("network.egress_mbps"), "{e}");
}

#[test]
fn overflow_prone_sizes_are_refused_by_key() {
    for (from, to, key) in [
        ("ram_gb: 4", "ram_gb: 18446744073709551615", "ram_gb"),
        ("ram_gb: 4", "ram_gb: 1073741825", "ram_gb"),
        ("ram_gb: 4", "ram_mb: 9999999999999", "ram_mb"),
        (
            "storage_size: 25G",
            "storage_size: 2000000T",
            "storage_size",
        ),
    ] {
        let e = err_of(&SLICER.replace(from, to));
        assert!(
            e.contains(&format!("host_groups[0].{key}")) && e.contains("beyond any host"),
            "{to}: {e}"
        );
    }
    // Beyond u64 altogether: the parser names the key.
    let e = err_of(&SLICER.replace("ram_gb: 4", "ram_mb: 99999999999999999999999"));
    assert!(e.contains("host_groups[0].ram_mb"), "{e}");
    let e = err_of(&SLICER.replace("vcpu: 2", "vcpu: 4294967296"));
    assert!(e.contains("host_groups[0].vcpu"), "{e}");
    let net = "mode: isolated\n        range: 10.0.0.0/24\n        egress_mbps: ";
    for bad in ["0", "4294967295"] {
        let e = err_of(&SLICER.replace("mode: none", &format!("{net}{bad}")));
        assert!(e.contains("network.egress_mbps"), "{bad}: {e}");
    }
    TenantConfig::parse(&SLICER.replace("mode: none", &format!("{net}1000000"))).unwrap();
}

#[test]
fn forward_ports_default_to_unprivileged() {
    let c = TenantConfig::parse(SLICER).unwrap();
    assert_eq!(c.forward_ports, (1024, 65535));
    let c =
        TenantConfig::parse(&SLICER.replace("  image:", "  forward_ports: 20000-20999\n  image:"))
            .unwrap();
    assert_eq!(c.forward_ports, (20000, 20999));
}

#[test]
fn agent_concurrency_defaults_from_pids_and_is_bounded() {
    let c = TenantConfig::parse(SLICER).unwrap();
    assert_eq!(c.groups[0].agent_concurrency, 64);
    let c =
        TenantConfig::parse(&SLICER.replace("ram_gb: 4", "ram_gb: 4\n      pids_max: 64")).unwrap();
    assert_eq!(c.groups[0].agent_concurrency, 6);
    let c = TenantConfig::parse(
        &SLICER.replace("ram_gb: 4", "ram_gb: 4\n      agent_concurrency: 200"),
    )
    .unwrap();
    assert_eq!(c.groups[0].agent_concurrency, 200);
    let e = err_of(&SLICER.replace("ram_gb: 4", "ram_gb: 4\n      agent_concurrency: 0"));
    assert!(e.contains("host_groups[0].agent_concurrency"), "{e}");
}

#[test]
fn duplicate_groups_rejected() {
    let dup = SLICER.replace("  image:", "    - name: a3cf\n  image:");
    assert!(err_of(&dup).contains("defined twice"));
}

#[test]
fn tcp_bind() {
    let c = TenantConfig::parse(&SLICER.replace(
        "\"/run/bulkhead/a3cf.sock\"",
        "\"127.0.0.1\"\n    port: 9000",
    ))
    .unwrap();
    assert_eq!(
        c.listen,
        ApiListen::Tcp {
            addr: "127.0.0.1:9000".into(),
            token_file: None
        }
    );
}

const SHARED: &str = r#"
config:
  image: minimal
  hypervisor: jail
  tenants:
    - name: a3cf
      host_groups:
        - name: a3cf
          network: { mode: isolated, range: 10.10.0.0/24 }
    - name: e7d1
      hypervisor: qemu
      host_groups:
        - name: e7d1
          network: { mode: isolated, range: 10.20.0.0/24 }
  api:
    bind_address: /run/bulkhead/admin.sock
    tenant_sockets: /run/bulkhead/tenants
    tcp: { bind: "127.0.0.1:8443" }
  roles:
    - name: ci-runner
      rules: [ { resources: [nodes], actions: [list, get, create, delete, exec, copy] } ]
"#;

fn shared_err(text: &str) -> String {
    DaemonConfig::parse(text).unwrap_err().to_string()
}

#[test]
fn loads_a_shared_daemon() {
    let c = DaemonConfig::parse(SHARED).unwrap();
    assert!(c.shared);
    assert_eq!(c.tenants.len(), 2);
    assert_eq!(c.tenants[0].hypervisor, "jail");
    assert_eq!(c.tenants[1].hypervisor, "qemu");
    assert_eq!(
        c.tenants[1].listen,
        ApiListen::Unix("/run/bulkhead/tenants/e7d1.sock".into())
    );
    assert_eq!(c.api.socket, Some("/run/bulkhead/admin.sock".into()));
    assert_eq!(c.api.tcp.as_ref().unwrap().addr.port(), 8443);
    assert!(c.roles.get("ci-runner").is_some());
    // The one-tenant shape is still one tenant.
    let one = DaemonConfig::parse(SLICER).unwrap();
    assert!(!one.shared);
    assert_eq!(one.tenants[0].tenant, "a3cf");
    assert_eq!(one.api.socket, Some("/run/bulkhead/a3cf.sock".into()));
}

#[test]
fn shared_daemon_refuses_what_tenants_would_share() {
    let e = shared_err(&SHARED.replace(
        "name: e7d1\n      hypervisor",
        "name: a3cf\n      hypervisor",
    ));
    assert!(
        e.contains("config.tenants[1].name") && e.contains("twice"),
        "{e}"
    );
    let e = shared_err(&SHARED.replace("        - name: e7d1", "        - name: a3cf"));
    assert!(
        e.contains("config.tenants[1].host_groups[0].name")
            && e.contains("\"a3cf\"")
            && e.contains("\"e7d1\""),
        "{e}"
    );
    let e = shared_err(&SHARED.replace("        - name: e7d1", "        - name: a3cf-x"));
    assert!(e.contains("followed by a dash"), "{e}");
    let e = shared_err(&SHARED.replace("10.20.0.0/24", "10.10.0.0/16"));
    assert!(
        e.contains("config.tenants[1].host_groups[0].network.range")
            && e.contains("tenant \"a3cf\""),
        "{e}"
    );
    let e = shared_err(&SHARED.replace("  tenants:", "  host_groups: [{name: x}]\n  tenants:"));
    assert!(e.contains("config.host_groups"), "{e}");
    let e = shared_err(&SHARED.replace("10.20.0.0/24 }", "10.20.0.0/24 }\n          vcpus: 2"));
    assert!(e.contains("config.tenants[1].host_groups[0]"), "{e}");
    let e = shared_err(&SHARED.replace("127.0.0.1:8443", "0.0.0.0:8443"));
    assert!(
        e.contains("config.api.tcp.tls") && e.contains("loopback"),
        "{e}"
    );
    assert!(DaemonConfig::parse(&SHARED.replace(
        "127.0.0.1:8443\" }",
        "0.0.0.0:8443\", tls: { cert: /etc/b/cert.pem, key: /etc/b/key.pem } }"
    ))
    .is_ok());
    let e = shared_err(&SHARED.replace("/run/bulkhead/admin.sock", "127.0.0.1:9000"));
    assert!(
        e.contains("config.api.bind_address") && e.contains("api.tcp"),
        "{e}"
    );
    let e = shared_err(&SHARED.replace("actions: [list,", "actions: [fly,"));
    assert!(e.contains("config.roles[0].rules[0].actions"), "{e}");
    let e = shared_err(&SHARED.replace(
        "  image: minimal\n",
        "  image: minimal\n  forward_ports: 20000-20999\n",
    ));
    assert!(e.contains("config.forward_ports"), "{e}");
    let own = |t: &str, r: &str| format!("\n    - name: {t}\n      forward_ports: {r}\n");
    let e = shared_err(
        &SHARED
            .replace("\n    - name: a3cf\n", &own("a3cf", "20000-20999"))
            .replace("\n    - name: e7d1\n", &own("e7d1", "20500-21000")),
    );
    assert!(
        e.contains("config.tenants[1].forward_ports") && e.contains("overlaps"),
        "{e}"
    );
    let c =
        DaemonConfig::parse(&SHARED.replace("\n    - name: a3cf\n", &own("a3cf", "20000-20999")))
            .unwrap();
    assert_eq!(c.tenants[0].forward_ports, (20000, 20999));
    assert_eq!(
        c.tenants[1].forward_ports,
        crate::daemon_config::NO_FORWARD_PORTS
    );
    let e = shared_err(&SHARED.replace(
        "/run/bulkhead/admin.sock",
        "/run/bulkhead/tenants/admin.sock",
    ));
    assert!(
        e.contains("config.api.tenant_sockets") && e.contains("admin socket"),
        "{e}"
    );
    let e = shared_err(&SLICER.replace(
        "bind_address: \"/run/bulkhead/a3cf.sock\"",
        "bind_address: \"10.1.1.1:80\"",
    ));
    assert!(e.contains("loopback"), "{e}");
}
