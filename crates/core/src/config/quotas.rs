//! Per-tenant quotas (`quotas: { nodes: 20, vcpu: 16, ram: 32G, storage: 200G }` under
//! `config:`, or under each entry of `config.tenants`; issue #12, ADR 0025): what a tenant's
//! nodes may add up to, and the arithmetic of a create against them.
//!
//! Invariants:
//! - every limit is optional: an absent limit is unlimited, so a config without `quotas`
//!   behaves exactly as before;
//! - a limit that is set is at least what one node needs and at most what any host has
//!   (0, or an absurd figure, is refused naming its key);
//! - [`Quotas::check`] is pure: the daemon counts the tenant's nodes (every state, since a
//!   stopped or suspended node keeps its claim) where no other write can come between the
//!   count and the insert, and asks here.

use serde::{Deserialize, Serialize};

use super::error::{key_err, ConfigError};

/// Nodes a quota may allow at most (far beyond any host).
pub const MAX_QUOTA_NODES: u64 = 1 << 20;
/// vCPUs a quota may allow at most.
pub const MAX_QUOTA_VCPU: u64 = 1 << 20;
/// The largest ram or storage quota (1 EiB, as a host group's `ram` and `storage_size`).
pub const MAX_QUOTA_BYTES: u64 = 1 << 60;
/// The smallest ram or storage quota: what the smallest node needs.
pub const MIN_QUOTA_BYTES: u64 = 16 << 20;

/// `quotas` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u64>,
    /// A size, e.g. `32G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<String>,
    /// A size, e.g. `200G`: the sum of the nodes' `storage_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// A tenant's validated quotas; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    pub nodes: Option<u64>,
    pub vcpu: Option<u64>,
    pub ram_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
}

/// What nodes use (or a create asks for): counts and sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub nodes: u64,
    pub vcpu: u64,
    pub ram_bytes: u64,
    pub storage_bytes: u64,
}

impl Usage {
    /// One node's share.
    pub fn node(vcpu: u32, ram_bytes: u64, storage_bytes: u64) -> Self {
        Usage {
            nodes: 1,
            vcpu: vcpu as u64,
            ram_bytes,
            storage_bytes,
        }
    }

    /// Adds another's figures (saturating: a sum never wraps into a small number).
    pub fn add(&mut self, o: &Usage) {
        self.nodes = self.nodes.saturating_add(o.nodes);
        self.vcpu = self.vcpu.saturating_add(o.vcpu);
        self.ram_bytes = self.ram_bytes.saturating_add(o.ram_bytes);
        self.storage_bytes = self.storage_bytes.saturating_add(o.storage_bytes);
    }
}

/// One of the quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nodes,
    Vcpu,
    Ram,
    Storage,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Nodes, Kind::Vcpu, Kind::Ram, Kind::Storage];

    /// The key under `quotas`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Nodes => "nodes",
            Kind::Vcpu => "vcpu",
            Kind::Ram => "ram",
            Kind::Storage => "storage",
        }
    }

    fn is_bytes(self) -> bool {
        matches!(self, Kind::Ram | Kind::Storage)
    }

    fn of(self, u: &Usage) -> u64 {
        match self {
            Kind::Nodes => u.nodes,
            Kind::Vcpu => u.vcpu,
            Kind::Ram => u.ram_bytes,
            Kind::Storage => u.storage_bytes,
        }
    }

    /// A figure of this quota as people write it (`4G` for bytes when exact).
    pub fn show(self, v: u64) -> String {
        if self.is_bytes() {
            human_bytes(v)
        } else {
            v.to_string()
        }
    }
}

/// A size in the config's units where it is exact (`32G`, `512M`), else bytes.
pub fn human_bytes(v: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if v != 0 && v.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", v >> shift);
        }
    }
    format!("{v} bytes")
}

/// A create that would take a quota beyond its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub kind: Kind,
    pub used: u64,
    pub asked: u64,
    pub limit: u64,
}

impl Exceeded {
    /// `quota exceeded: vcpu: 14 in use + 4 asked > 16 allowed (config.quotas.vcpu)`, with
    /// `key_prefix` where the tenant's quotas are written (`config.quotas`).
    pub fn message(&self, key_prefix: &str) -> String {
        let k = self.kind;
        format!(
            "quota exceeded: {}: {} in use + {} asked > {} allowed ({key_prefix}.{}): delete nodes the tenant no longer needs, or ask the operator for a larger quota",
            k.key(),
            k.show(self.used),
            k.show(self.asked),
            k.show(self.limit),
            k.key()
        )
    }
}

impl Quotas {
    /// Validates `quotas` (`path` is its key, e.g. `config.quotas`); absent is unlimited.
    pub fn from_raw(path: &str, raw: Option<&RawQuotas>) -> Result<Self, ConfigError> {
        let Some(r) = raw else {
            return Ok(Quotas::default());
        };
        let count = |key: &str, v: Option<u64>, max: u64| -> Result<Option<u64>, ConfigError> {
            match v {
                Some(0) => Err(key_err(
                    format!("{path}.{key}"),
                    "0 would refuse every create: give at least 1, or leave the key out for no limit",
                )),
                Some(n) if n > max => Err(key_err(
                    format!("{path}.{key}"),
                    format!("{n} is beyond any host (at most {max}): give what the tenant may use, or leave the key out for no limit"),
                )),
                v => Ok(v),
            }
        };
        let size = |key: &str, v: Option<&String>, max: u64| -> Result<Option<u64>, ConfigError> {
            let Some(s) = v else { return Ok(None) };
            let k = format!("{path}.{key}");
            let n = crate::size::parse(s).map_err(|m| key_err(&k, m))?;
            if n < MIN_QUOTA_BYTES {
                return Err(key_err(
                    k,
                    format!("{s:?} is less than the smallest node (16M): give e.g. 32G, or leave the key out for no limit"),
                ));
            }
            if n > max {
                return Err(key_err(
                    k,
                    format!("{s:?} is beyond any host (at most 1 EiB): give what the tenant may use, e.g. 200G"),
                ));
            }
            Ok(Some(n))
        };
        Ok(Quotas {
            nodes: count("nodes", r.nodes, MAX_QUOTA_NODES)?,
            vcpu: count("vcpu", r.vcpu, MAX_QUOTA_VCPU)?,
            ram_bytes: size("ram", r.ram.as_ref(), MAX_QUOTA_BYTES)?,
            storage_bytes: size("storage", r.storage.as_ref(), MAX_QUOTA_BYTES)?,
        })
    }

    /// The limit of one quota; `None` is unlimited.
    pub fn limit(&self, k: Kind) -> Option<u64> {
        match k {
            Kind::Nodes => self.nodes,
            Kind::Vcpu => self.vcpu,
            Kind::Ram => self.ram_bytes,
            Kind::Storage => self.storage_bytes,
        }
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        Kind::ALL.iter().any(|k| self.limit(*k).is_some())
    }

    /// Whether the nodes the host groups' `count` makes at start (`at_start`, their sum) fit:
    /// a config whose own `count`s exceed its quotas is refused naming the quota (`path` is
    /// where the quotas are written), rather than failing creates at every start.
    pub fn check_start(&self, path: &str, at_start: &Usage) -> Result<(), ConfigError> {
        self.check(&Usage::default(), at_start).map_err(|e| {
            key_err(
                format!("{path}.{}", e.kind.key()),
                format!(
                    "the host groups' count make {} at start, beyond this quota of {}: raise the quota or lower count",
                    e.kind.show(e.asked),
                    e.kind.show(e.limit)
                ),
            )
        })
    }

    /// Whether `asked` fits beside `used`: the first quota it would exceed, in the order
    /// nodes, vcpu, ram, storage. Reaching a limit exactly is allowed.
    pub fn check(&self, used: &Usage, asked: &Usage) -> Result<(), Exceeded> {
        for k in Kind::ALL {
            let Some(limit) = self.limit(k) else { continue };
            let (u, a) = (k.of(used), k.of(asked));
            if u.saturating_add(a) > limit {
                return Err(Exceeded {
                    kind: k,
                    used: u,
                    asked: a,
                    limit,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(yaml: &str) -> Result<Quotas, ConfigError> {
        let raw: RawQuotas = serde_yaml::from_str(yaml).unwrap();
        Quotas::from_raw("config.quotas", Some(&raw))
    }

    #[test]
    fn absent_is_unlimited_and_sizes_parse_as_elsewhere() {
        let none = Quotas::from_raw("config.quotas", None).unwrap();
        assert_eq!(none, Quotas::default());
        assert!(!none.any());
        let big = Usage {
            nodes: u64::MAX,
            vcpu: u64::MAX,
            ram_bytes: u64::MAX,
            storage_bytes: u64::MAX,
        };
        assert!(none.check(&big, &big).is_ok(), "no limit, no refusal");
        let got = q("{nodes: 20, vcpu: 16, ram: 32G, storage: 200G}").unwrap();
        assert_eq!(
            got,
            Quotas {
                nodes: Some(20),
                vcpu: Some(16),
                ram_bytes: Some(32 << 30),
                storage_bytes: Some(200 << 30),
            }
        );
        assert_eq!(q("{ram: 512Mi}").unwrap().ram_bytes, Some(512 << 20));
    }

    #[test]
    fn zero_or_absurd_limits_are_refused_naming_the_key() {
        for (yaml, key) in [
            ("{nodes: 0}", "config.quotas.nodes"),
            ("{vcpu: 0}", "config.quotas.vcpu"),
            ("{vcpu: 99999999}", "config.quotas.vcpu"),
            ("{nodes: 99999999}", "config.quotas.nodes"),
            ("{ram: \"0\"}", "config.quotas.ram"),
            ("{ram: 1M}", "config.quotas.ram"),
            ("{ram: 12Q}", "config.quotas.ram"),
            ("{storage: 99999999T}", "config.quotas.storage"),
            ("{storage: 2000000T}", "config.quotas.storage"),
        ] {
            let e = q(yaml).err().unwrap_or_else(|| panic!("{yaml} accepted"));
            let msg = e.to_string();
            assert!(msg.contains(&format!("{key}:")), "{yaml}: {msg}");
        }
        let e = serde_yaml::from_str::<RawQuotas>("{cpus: 2}").unwrap_err();
        assert!(e.to_string().contains("cpus"), "{e}");
    }

    #[test]
    fn the_arithmetic_allows_up_to_the_limit_and_names_the_first_exceeded() {
        let qs = Quotas {
            nodes: Some(3),
            vcpu: Some(16),
            ram_bytes: Some(8 << 30),
            storage_bytes: Some(10 << 30),
        };
        let mut used = Usage::default();
        used.add(&Usage::node(8, 2 << 30, 2 << 30));
        used.add(&Usage::node(6, 2 << 30, 2 << 30));
        assert_eq!(
            used,
            Usage {
                nodes: 2,
                vcpu: 14,
                ram_bytes: 4 << 30,
                storage_bytes: 4 << 30
            }
        );
        // Exactly at every limit that binds: allowed.
        assert!(qs.check(&used, &Usage::node(2, 4 << 30, 6 << 30)).is_ok());
        let e = qs
            .check(&used, &Usage::node(4, 1 << 30, 1 << 30))
            .unwrap_err();
        assert_eq!(
            e,
            Exceeded {
                kind: Kind::Vcpu,
                used: 14,
                asked: 4,
                limit: 16
            }
        );
        assert_eq!(
            e.message("config.quotas"),
            "quota exceeded: vcpu: 14 in use + 4 asked > 16 allowed (config.quotas.vcpu): delete nodes the tenant no longer needs, or ask the operator for a larger quota"
        );
        let e = qs
            .check(&used, &Usage::node(1, 5 << 30, 1 << 30))
            .unwrap_err();
        assert_eq!(e.kind, Kind::Ram);
        assert!(
            e.message("q")
                .contains("ram: 4G in use + 5G asked > 8G allowed (q.ram)"),
            "{}",
            e.message("q")
        );
        let e = qs
            .check(&used, &Usage::node(1, 1 << 20, 7 << 30))
            .unwrap_err();
        assert_eq!(e.kind, Kind::Storage);
        used.add(&Usage::node(1, 1 << 20, 1 << 20));
        let e = qs
            .check(&used, &Usage::node(1, 1 << 20, 1 << 20))
            .unwrap_err();
        assert_eq!((e.kind, e.used, e.asked, e.limit), (Kind::Nodes, 3, 1, 3));
        // Sums saturate rather than wrap past a limit.
        let mut huge = Usage::node(1, u64::MAX, 0);
        huge.add(&Usage::node(1, u64::MAX, 0));
        assert_eq!(huge.ram_bytes, u64::MAX);
        assert!(qs.check(&huge, &Usage::default()).is_err());
    }

    #[test]
    fn bytes_show_in_config_units() {
        assert_eq!(human_bytes(32 << 30), "32G");
        assert_eq!(human_bytes(1536 << 20), "1536M");
        assert_eq!(human_bytes(3 << 40), "3T");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(human_bytes(0), "0 bytes");
    }

    #[test]
    fn both_config_shapes_carry_quotas_per_tenant() {
        use crate::{DaemonConfig, TenantConfig};
        let one = "config:\n  host_groups: [{name: g}]\n  quotas: {nodes: 2, ram: 4G}\n";
        let c = TenantConfig::parse(one).unwrap();
        assert_eq!(
            (c.quotas.nodes, c.quotas.ram_bytes),
            (Some(2), Some(4 << 30))
        );
        assert_eq!(c.quotas.vcpu, None);
        let plain = TenantConfig::parse("config:\n  host_groups: [{name: g}]\n").unwrap();
        assert_eq!(plain.quotas, Quotas::default(), "no quotas: unlimited");
        let shared = "config:\n  tenants:\n    - name: a\n      host_groups: [{name: a}]\n      quotas: {vcpu: 4}\n    - name: b\n      host_groups: [{name: b}]\n";
        let d = DaemonConfig::parse(shared).unwrap();
        assert_eq!(d.tenant("a").unwrap().quotas.vcpu, Some(4));
        assert_eq!(d.tenant("b").unwrap().quotas, Quotas::default());
        let e = DaemonConfig::parse(&shared.replace("{vcpu: 4}", "{vcpu: 0}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.tenants[0].quotas.vcpu:"), "{e}");
        let counted =
            "config:\n  host_groups: [{name: g, count: 2, vcpu: 2}]\n  quotas: {vcpu: 3}\n";
        let e = TenantConfig::parse(counted).unwrap_err().to_string();
        assert!(
            e.contains("config.quotas.vcpu:") && e.contains("make 4 at start"),
            "{e}"
        );
        assert!(TenantConfig::parse(&counted.replace("vcpu: 3", "vcpu: 4")).is_ok());
        let e = DaemonConfig::parse(&format!("{shared}  quotas: {{nodes: 3}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config.quotas:") && e.contains("per tenant"),
            "{e}"
        );
    }
}
