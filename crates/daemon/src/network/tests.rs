//! Unit tests of `network` (kept apart to keep its module small).
use super::*;

fn cfg(text: &str) -> TenantConfig {
    TenantConfig::parse(text).unwrap()
}

const TWO: &str = r#"
config:
  tenant: t1
  host_groups:
    - name: web
      network: { mode: isolated, range: 10.10.0.0/22, allow: ["203.0.113.0/24"], egress_mbps: 5 }
      dns_servers: ["192.0.2.53"]
    - name: plain
    - name: k3s
      network: { mode: bridge, range: 10.20.0.0/24 }
"#;

#[test]
fn groups_get_indexes_and_plans() {
    let n = TenantNetwork::from_config(&cfg(TWO), bulkhead_core::uid_base("t1"), &HashMap::new())
        .unwrap()
        .unwrap();
    assert_eq!(n.groups.len(), 2);
    let web = n.group("web").unwrap();
    let (slot, addr) = n.allocate(web, &HashSet::new(), None).unwrap();
    assert_eq!((slot, addr), (0, "10.10.0.2".parse().unwrap()));
    let used = [addr].into_iter().collect();
    assert_eq!(
        n.allocate(web, &used, None).unwrap().1,
        "10.10.0.6".parse::<Ipv4Addr>().unwrap()
    );
    assert!(format!(
        "{:?}",
        n.allocate(web, &used, Some("10.10.0.2")).unwrap_err()
    )
    .contains("already used"));
    assert!(format!(
        "{:?}",
        n.allocate(web, &used, Some("10.10.0.5")).unwrap_err()
    )
    .contains("not a node address"));
    // A freed address is not handed out again at once: slot 0 is free, slot 2 comes next.
    let used_later = ["10.10.0.6".parse().unwrap()].into_iter().collect();
    assert_eq!(
        n.allocate(web, &used_later, None).unwrap().1,
        "10.10.0.10".parse::<Ipv4Addr>().unwrap()
    );
    let nn = n.node_net(web, slot, addr, None);
    let plan = n.plan(web, &nn).unwrap();
    assert_eq!(plan.gateway, "10.10.0.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(plan.egress_mbps, Some(5));
    assert_eq!(plan.bridge, None);
    let k3s = n.group("k3s").unwrap();
    assert_eq!(k3s.index, 1);
    let kn = n.node_net(k3s, 0, "10.20.0.2".parse().unwrap(), None);
    assert_eq!(kn.bridge.as_deref(), Some(n.tag.bridge(1).as_str()));
}

#[test]
fn group_indexes_survive_reordering_and_new_groups() {
    let first =
        TenantNetwork::from_config(&cfg(TWO), bulkhead_core::uid_base("t1"), &HashMap::new())
            .unwrap()
            .unwrap();
    let known = first.indexes(&HashMap::new());
    assert_eq!((known["web"], known["k3s"]), (0, 1));
    // k3s moves first and a new group appears before both: nobody is renamed.
    let reordered = r#"
config:
  tenant: t1
  host_groups:
    - name: fresh
      network: { mode: isolated, range: 10.30.0.0/24 }
    - name: k3s
      network: { mode: bridge, range: 10.20.0.0/24 }
    - name: web
      network: { mode: isolated, range: 10.10.0.0/22 }
"#;
    let second = TenantNetwork::from_config(&cfg(reordered), bulkhead_core::uid_base("t1"), &known)
        .unwrap()
        .unwrap();
    let idx = second.indexes(&known);
    assert_eq!((idx["web"], idx["k3s"], idx["fresh"]), (0, 1, 2));
}

#[test]
fn overrides_only_narrow() {
    let n = TenantNetwork::from_config(&cfg(TWO), bulkhead_core::uid_base("t1"), &HashMap::new())
        .unwrap()
        .unwrap();
    let web = n.group("web").unwrap();
    assert!(n
        .validate_override(web, &["203.0.113.0/25".into()], &[])
        .unwrap()
        .is_some());
    let e = n
        .validate_override(web, &["0.0.0.0/0".into()], &[])
        .unwrap_err();
    assert!(e.contains("only narrow"), "{e}");
    let e = n.validate_override(web, &[], &["::/0".into()]).unwrap_err();
    assert!(e.contains("network.drop"), "{e}");
    assert_eq!(n.validate_override(web, &[], &[]).unwrap(), None);
}

#[test]
fn overlapping_claims_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = cfg("config:\n  tenant: ta\n  host_groups:\n    - name: g\n      network: { mode: isolated, range: 10.30.0.0/22 }\n");
    let b = cfg("config:\n  tenant: tb\n  host_groups:\n    - name: g\n      network: { mode: isolated, range: 10.30.2.0/24 }\n");
    let c = cfg("config:\n  tenant: tc\n  host_groups:\n    - name: g\n      network: { mode: isolated, range: 10.30.4.0/24 }\n");
    let held = claim_ranges(dir.path(), "ta", "/run/ta.sock", &a.groups).unwrap();
    let e = claim_ranges(dir.path(), "tb", "/run/tb.sock", &b.groups)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tenant \"ta\"") && e.contains("/run/ta.sock"),
        "{e}"
    );
    let _c = claim_ranges(dir.path(), "tc", "/run/tc.sock", &c.groups).unwrap();
    // The same tenant takes its own claim over (a restart after a crash).
    let _again = claim_ranges(dir.path(), "ta", "/run/ta.sock", &a.groups).unwrap();
    held.release_on_drop();
    drop(held);
    assert!(claim_ranges(dir.path(), "tb", "/run/tb.sock", &b.groups).is_ok());
}
