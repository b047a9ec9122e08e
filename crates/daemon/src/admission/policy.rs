//! The tenant's static admission rules (`config.policy`, [`Policy`]) applied to one typed
//! request, and what "narrower" means for each kind of request when the policy webhook
//! rewrites one (ADR 0024). Pure: no I/O, unit-tested here.
//!
//! Every refusal is `Code::PolicyDenied` (403) and its message begins with the rule's key
//! (`policy.max_node.vcpu: ...`). Narrowing, per action:
//! - create: `cpus` and `ram_bytes` may only go down, `tags` may only lose entries; every
//!   other field stays as asked.
//! - exec: `uid` and `gid` may only change from 0 (root) to another id; `timeout_ms` may only
//!   appear or go down; `env` may only lose entries; the command, arguments, directory,
//!   stdin and terminal stay as asked.
//! - forward: `trusted_proxies` may only lose entries; the rest (ports, bind, PROXY v2)
//!   stays; a forward tunnel's target stays.
//!
//! Anything else is a widening, refused as such; a narrowed request must still pass the
//! static rules.

use bulkhead_agent::proto::ExecRequest;
use bulkhead_api::{CreateNodeRequest, ForwardRequest};
use bulkhead_core::config::policy::Policy;
use bulkhead_core::{Code, DomainError, HostGroup};
use std::net::{IpAddr, Ipv4Addr};

fn denied(msg: String) -> DomainError {
    DomainError::new(Code::PolicyDenied, msg)
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn bytes(b: u64) -> String {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    if b.is_multiple_of(G) {
        format!("{}G", b / G)
    } else if b.is_multiple_of(M) {
        format!("{}M", b / M)
    } else {
        format!("{b} bytes")
    }
}

/// A create in `g` (the tenant's image `image`), with the group's defaults filled in.
pub fn check_create(
    p: &Policy,
    g: &HostGroup,
    image: &str,
    req: &CreateNodeRequest,
) -> Result<(), DomainError> {
    if let Some(d) = &p.drivers {
        if !d.contains(&g.hypervisor) {
            return Err(denied(format!(
                "policy.drivers: host group {:?} runs driver {:?}, and this tenant may use only {}",
                g.name,
                g.hypervisor,
                list(d)
            )));
        }
    }
    if let Some(m) = &p.network_modes {
        if !m.contains(&g.network.mode) {
            let names: Vec<&str> = m.iter().map(|x| x.as_str()).collect();
            return Err(denied(format!(
                "policy.network_modes: host group {:?} has network mode {}, and this tenant may use only {}",
                g.name,
                g.network.mode.as_str(),
                list(&names)
            )));
        }
    }
    if let Some(i) = &p.images {
        if !i.iter().any(|x| x == image) {
            return Err(denied(format!(
                "policy.images: nodes boot image {image:?}, and this tenant may use only {}",
                list(i)
            )));
        }
    }
    let cpus = req.cpus.unwrap_or(g.vcpu);
    if let Some(max) = p.max_node.vcpu {
        if cpus > max {
            return Err(denied(format!(
                "policy.max_node.vcpu: {cpus} vCPUs asked, at most {max} allowed: send cpus of at most {max}"
            )));
        }
    }
    let ram = req.ram_bytes.unwrap_or(g.ram_bytes);
    if let Some(max) = p.max_node.ram_bytes {
        if ram > max {
            return Err(denied(format!(
                "policy.max_node.ram: {} of RAM asked, at most {} allowed: send ram_bytes of at most {max}",
                bytes(ram),
                bytes(max)
            )));
        }
    }
    if let Some(max) = p.max_node.storage_bytes {
        if g.storage_bytes > max {
            return Err(denied(format!(
                "policy.max_node.storage: host group {:?} gives nodes {} of storage, at most {} allowed",
                g.name,
                bytes(g.storage_bytes),
                bytes(max)
            )));
        }
    }
    Ok(())
}

/// A create's own `userdata` (the request's; a host group's is the operator's and runs):
/// userdata runs as root in the node, so `exec_as_root: false` refuses it.
pub fn check_userdata(p: &Policy, userdata: Option<&str>) -> Result<(), DomainError> {
    if !p.exec_as_root && userdata.is_some_and(|u| !u.is_empty()) {
        return Err(denied(
            "policy.exec_as_root: this tenant may not run anything as uid 0 (root), and \
             userdata runs as root in the node: leave userdata out, and run the script with \
             an exec as a non-root uid once the node is up"
                .into(),
        ));
    }
    Ok(())
}

/// The setuid and setgid permission bits.
pub const SETID: u32 = 0o6000;

/// A write into a node (copy-in, `fs/mkdir`): under `exec_as_root: false` it may not make
/// what it writes root's (`uid`/`gid` 0 asked) or set setuid/setgid bits (`mode`), which a
/// non-root exec could then run as root.
pub fn check_write(
    p: &Policy,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<(&str, u32)>,
) -> Result<(), DomainError> {
    if p.exec_as_root {
        return Ok(());
    }
    for (k, v) in [("uid", uid), ("gid", gid)] {
        if v == Some(0) {
            return Err(denied(format!(
                "policy.exec_as_root: this tenant may not make files root's: {k} 0 (root) is \
                 refused; send a non-root {k}, e.g. {k}=1000"
            )));
        }
    }
    if let Some((k, m)) = mode {
        if m & SETID != 0 {
            return Err(denied(format!(
                "policy.exec_as_root: {k} {m:04o} sets setuid or setgid, which would let a \
                 non-root exec run as another user: send {k} {:04o}",
                m & !SETID
            )));
        }
    }
    Ok(())
}

/// An exec (or shell) as the agent would run it.
pub fn check_exec(p: &Policy, req: &ExecRequest) -> Result<(), DomainError> {
    if !p.exec_as_root && req.uid == 0 {
        return Err(denied(
            "policy.exec_as_root: this tenant may not exec as uid 0 (root), and an omitted uid \
             is root: send a non-root uid, e.g. uid=1000 (the SDKs' non-root user, 4294967295, \
             is 1000)"
                .into(),
        ));
    }
    Ok(())
}

/// The bind address a port forward asks for (127.0.0.1 when it names none).
pub fn forward_bind(req: &ForwardRequest) -> Result<IpAddr, DomainError> {
    match &req.bind {
        None => Ok(Ipv4Addr::LOCALHOST.into()),
        Some(b) => b.parse().map_err(|_| {
            DomainError::invalid(format!(
                "bind {b:?} is not an IP address, e.g. 127.0.0.1 or 0.0.0.0"
            ))
        }),
    }
}

/// A port forward (`POST /vm/{node}/forwards`), or with `req` `None` a forward tunnel.
pub fn check_forward(p: &Policy, req: Option<&ForwardRequest>) -> Result<(), DomainError> {
    if !p.forwards.allowed {
        return Err(denied(format!(
            "policy.forwards.allowed: {} not allowed in this tenant",
            if req.is_some() {
                "port forwards are"
            } else {
                "forward tunnels into nodes are"
            }
        )));
    }
    if let (Some(req), Some(allowed)) = (req, &p.forwards.bind_addresses) {
        let bind = forward_bind(req)?;
        if !allowed.contains(&bind) {
            return Err(denied(format!(
                "policy.forwards.bind_addresses: bind {bind} is not allowed: this tenant's forwards may listen on {} only",
                list(allowed)
            )));
        }
    }
    Ok(())
}

fn widened(what: String) -> DomainError {
    denied(format!(
        "policy webhook widened the request ({what}): a webhook may only narrow a request, so it is denied"
    ))
}

fn subset(new: &[String], old: &[String]) -> bool {
    new.iter().all(|x| old.contains(x))
}

/// The webhook's create `new` against the asked `old` (both with defaults filled in).
pub fn narrow_create(
    old: &CreateNodeRequest,
    mut new: CreateNodeRequest,
) -> Result<CreateNodeRequest, DomainError> {
    // Left out: kept as asked.
    new.cpus = new.cpus.or(old.cpus);
    new.ram_bytes = new.ram_bytes.or(old.ram_bytes);
    if new.cpus > old.cpus {
        return Err(widened(format!("cpus {:?} > {:?}", new.cpus, old.cpus)));
    }
    if new.ram_bytes > old.ram_bytes {
        return Err(widened(format!(
            "ram_bytes {:?} > {:?}",
            new.ram_bytes, old.ram_bytes
        )));
    }
    if !subset(&new.tags, &old.tags) {
        return Err(widened("tags added".into()));
    }
    let rest = |r: &CreateNodeRequest| {
        let mut r = r.clone();
        (r.cpus, r.ram_bytes, r.tags) = (None, None, vec![]);
        serde_json::to_value(r).unwrap_or_default()
    };
    if rest(&new) != rest(old) {
        return Err(widened(
            "only cpus, ram_bytes and tags may change in a create".into(),
        ));
    }
    Ok(new)
}

/// The webhook's exec `new` against the asked `old`.
pub fn narrow_exec(old: &ExecRequest, new: ExecRequest) -> Result<ExecRequest, DomainError> {
    for (k, o, n) in [("uid", old.uid, new.uid), ("gid", old.gid, new.gid)] {
        if n != o && o != 0 {
            return Err(widened(format!(
                "{k} {o} became {n}: only root (0) may become another id"
            )));
        }
    }
    match (old.timeout_ms, new.timeout_ms) {
        (Some(o), Some(n)) if n > o => return Err(widened(format!("timeout_ms {n} > {o}"))),
        (Some(o), None) => return Err(widened(format!("timeout_ms {o} removed"))),
        _ => {}
    }
    if !subset(&new.env, &old.env) {
        return Err(widened("env entries added or changed".into()));
    }
    if (&new.cmd, &new.args, &new.cwd, new.stdin, new.tty)
        != (&old.cmd, &old.args, &old.cwd, old.stdin, old.tty)
    {
        return Err(widened(
            "only uid, gid, timeout_ms and env may change in an exec".into(),
        ));
    }
    Ok(new)
}

/// The webhook's port forward `new` against the asked `old` (bind filled in).
pub fn narrow_forward(
    old: &ForwardRequest,
    new: ForwardRequest,
) -> Result<ForwardRequest, DomainError> {
    if !subset(&new.trusted_proxies, &old.trusted_proxies) {
        return Err(widened("trusted_proxies added".into()));
    }
    let same = (new.host_port, new.node_port, &new.bind, new.proxy_protocol)
        == (old.host_port, old.node_port, &old.bind, old.proxy_protocol);
    if !same {
        return Err(widened(
            "only trusted_proxies may change in a forward".into(),
        ));
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_core::TenantConfig;

    fn cfg(policy: &str) -> TenantConfig {
        TenantConfig::parse(&format!(
            "config:\n  hypervisor: jail\n  host_groups:\n    - name: g\n      vcpu: 4\n      ram_gb: 2\n      storage_size: 20G\n  policy: {policy}\n"
        ))
        .unwrap()
    }

    fn create_err(policy: &str, req: CreateNodeRequest) -> String {
        let c = cfg(policy);
        let e = check_create(&c.policy, &c.groups[0], &c.image, &req).unwrap_err();
        assert_eq!(e.code, Code::PolicyDenied);
        e.message
    }

    #[test]
    fn each_create_rule_names_itself() {
        let c = cfg("{}");
        check_create(&c.policy, &c.groups[0], &c.image, &Default::default()).unwrap();
        let e = create_err("{drivers: [qemu]}", Default::default());
        assert!(
            e.starts_with("policy.drivers: ") && e.contains("\"jail\""),
            "{e}"
        );
        let e = create_err("{network_modes: [isolated]}", Default::default());
        assert!(
            e.starts_with("policy.network_modes: ") && e.contains("mode none"),
            "{e}"
        );
        let e = create_err("{images: [python]}", Default::default());
        assert!(
            e.starts_with("policy.images: ") && e.contains("\"minimal\""),
            "{e}"
        );
        // The group's default of 4 counts when cpus is left out.
        let e = create_err("{max_node: {vcpu: 2}}", Default::default());
        assert_eq!(
            e,
            "policy.max_node.vcpu: 4 vCPUs asked, at most 2 allowed: send cpus of at most 2"
        );
        let small = CreateNodeRequest {
            cpus: Some(2),
            ram_bytes: Some(1 << 30),
            ..Default::default()
        };
        check_create(
            &cfg("{max_node: {vcpu: 2, ram: 1G}}").policy,
            &cfg("{}").groups[0],
            "minimal",
            &small,
        )
        .unwrap();
        let e = create_err("{max_node: {ram: 1G}}", Default::default());
        assert!(
            e.starts_with("policy.max_node.ram: 2G of RAM asked, at most 1G"),
            "{e}"
        );
        let e = create_err("{max_node: {storage: 10G}}", Default::default());
        assert!(
            e.starts_with("policy.max_node.storage: ") && e.contains("20G"),
            "{e}"
        );
    }

    #[test]
    fn exec_and_forward_rules() {
        let p = cfg("{exec_as_root: false}").policy;
        let root = ExecRequest::default();
        let e = check_exec(&p, &root).unwrap_err();
        assert!(
            e.message.starts_with("policy.exec_as_root: ") && e.message.contains("non-root uid")
        );
        check_exec(
            &p,
            &ExecRequest {
                uid: 1000,
                ..root.clone()
            },
        )
        .unwrap();
        check_exec(&cfg("{}").policy, &root).unwrap();
        let fw = ForwardRequest {
            node_port: 80,
            ..Default::default()
        };
        let e = check_forward(&cfg("{forwards: {allowed: false}}").policy, Some(&fw)).unwrap_err();
        assert!(e.message.starts_with("policy.forwards.allowed: "));
        assert!(check_forward(&cfg("{forwards: {allowed: false}}").policy, None).is_err());
        let p = cfg("{forwards: {bind_addresses: [127.0.0.1]}}").policy;
        check_forward(&p, Some(&fw)).unwrap();
        check_forward(&p, None).unwrap();
        let any = ForwardRequest {
            bind: Some("0.0.0.0".into()),
            ..fw.clone()
        };
        let e = check_forward(&p, Some(&any)).unwrap_err();
        assert!(
            e.message
                .starts_with("policy.forwards.bind_addresses: bind 0.0.0.0"),
            "{}",
            e.message
        );
        let bad = ForwardRequest {
            bind: Some("here".into()),
            ..fw
        };
        assert_eq!(
            check_forward(&p, Some(&bad)).unwrap_err().code,
            Code::InvalidRequest
        );
    }

    #[test]
    fn userdata_and_writes_under_exec_as_root_false() {
        let (no, yes) = (cfg("{exec_as_root: false}").policy, cfg("{}").policy);
        let e = check_userdata(&no, Some("echo hi")).unwrap_err();
        assert!(
            e.message.starts_with("policy.exec_as_root: ")
                && e.message.contains("userdata runs as root"),
            "{}",
            e.message
        );
        check_userdata(&no, None).unwrap();
        check_userdata(&yes, Some("echo hi")).unwrap();
        for (uid, gid, mode) in [
            (Some(0), None, None),
            (None, Some(0), None),
            (Some(1000), Some(1000), Some(("permissions", 0o4755))),
            (None, None, Some(("mode", 0o2775))),
        ] {
            let e = check_write(&no, uid, gid, mode).unwrap_err();
            assert_eq!(e.code, Code::PolicyDenied);
            assert!(
                e.message.starts_with("policy.exec_as_root: "),
                "{}",
                e.message
            );
            check_write(&yes, uid, gid, mode).unwrap();
        }
        let e = check_write(&no, None, None, Some(("permissions", 0o4755))).unwrap_err();
        assert!(e.message.contains("send permissions 0755"), "{}", e.message);
        check_write(&no, Some(1000), None, Some(("permissions", 0o1777))).unwrap();
    }

    #[test]
    fn narrowing_only() {
        let old = CreateNodeRequest {
            cpus: Some(4),
            ram_bytes: Some(1 << 30),
            tags: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let n = narrow_create(
            &old,
            CreateNodeRequest {
                cpus: Some(1),
                tags: vec!["a".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((n.cpus, n.ram_bytes), (Some(1), Some(1 << 30)));
        for wider in [
            CreateNodeRequest {
                cpus: Some(5),
                ..old.clone()
            },
            CreateNodeRequest {
                ram_bytes: Some(2 << 30),
                ..old.clone()
            },
            CreateNodeRequest {
                tags: vec!["c".into()],
                ..old.clone()
            },
            CreateNodeRequest {
                hostname: Some("x".into()),
                ..old.clone()
            },
        ] {
            let e = narrow_create(&old, wider).unwrap_err();
            assert!(
                e.message.starts_with("policy webhook widened the request"),
                "{}",
                e.message
            );
        }
        let root = ExecRequest {
            cmd: "id".into(),
            env: vec!["A=1".into()],
            timeout_ms: Some(5000),
            ..Default::default()
        };
        let n = narrow_exec(
            &root,
            ExecRequest {
                uid: 1000,
                gid: 1000,
                env: vec![],
                timeout_ms: Some(10),
                ..root.clone()
            },
        )
        .unwrap();
        assert_eq!(n.uid, 1000);
        let user = ExecRequest {
            uid: 1000,
            ..root.clone()
        };
        for wider in [
            ExecRequest {
                uid: 0,
                ..user.clone()
            },
            ExecRequest {
                uid: 1001,
                ..user.clone()
            },
            ExecRequest {
                timeout_ms: None,
                ..user.clone()
            },
            ExecRequest {
                timeout_ms: Some(6000),
                ..user.clone()
            },
            ExecRequest {
                env: vec!["B=2".into()],
                ..user.clone()
            },
            ExecRequest {
                cmd: "sh".into(),
                ..user.clone()
            },
        ] {
            assert!(narrow_exec(&user, wider).is_err());
        }
        let fw = ForwardRequest {
            node_port: 80,
            bind: Some("127.0.0.1".into()),
            proxy_protocol: true,
            trusted_proxies: vec!["10.0.0.0/8".into(), "10.1.0.0/16".into()],
            ..Default::default()
        };
        narrow_forward(
            &fw,
            ForwardRequest {
                trusted_proxies: vec!["10.1.0.0/16".into()],
                ..fw.clone()
            },
        )
        .unwrap();
        assert!(narrow_forward(
            &fw,
            ForwardRequest {
                node_port: 81,
                ..fw.clone()
            }
        )
        .is_err());
        assert!(narrow_forward(
            &fw,
            ForwardRequest {
                bind: Some("0.0.0.0".into()),
                ..fw.clone()
            }
        )
        .is_err());
    }
}
