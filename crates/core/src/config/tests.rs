//! The config's parsing and validation, driven through [`TenantConfig::parse`].

use super::*;

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
