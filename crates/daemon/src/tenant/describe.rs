//! Reading and changing what a node is beyond its state: its description (Slicer's
//! `SlicerVMDescription`: the node, its image and storage, its network policy as inherited
//! and as in effect) and its tags (add, remove, replace; atomic on the store's thread).

use bulkhead_api::TagUpdate;
use bulkhead_api::{names, NetworkPolicy, NodeDescription, NodeNetworkDescription, NodeTags};
use bulkhead_core::DomainError;

use super::{NodeRef, Tenant};

/// Most tags a node may carry (the create's limit too).
pub const MAX_TAGS: usize = 64;

impl Tenant {
    /// The node with its configuration and effective network policy.
    pub fn describe(&self, node: &NodeRef) -> Result<NodeDescription, DomainError> {
        let row = node.row();
        let g = self.group(&row.hostgroup)?;
        let cidrs = |v: &[ipnet::Ipv4Net]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let group_policy = NetworkPolicy {
            allow: cidrs(&g.network.allow),
            drop: cidrs(&g.network.drop),
        };
        let over = crate::network::node_net_of(row)
            .and_then(|n| n.policy)
            .map(|p| NetworkPolicy {
                allow: cidrs(&p.allow),
                drop: cidrs(&p.drop),
            });
        // A node's own policy narrows its group's: its allow list replaces the group's
        // (always within it), its drop list adds to the group's.
        let effective = match &over {
            None => group_policy.clone(),
            Some(o) => NetworkPolicy {
                allow: if o.allow.is_empty() {
                    group_policy.allow.clone()
                } else {
                    o.allow.clone()
                },
                drop: group_policy
                    .drop
                    .iter()
                    .chain(o.drop.iter().filter(|d| !group_policy.drop.contains(d)))
                    .cloned()
                    .collect(),
            },
        };
        Ok(NodeDescription {
            node: Tenant::to_api(row),
            state: row.status.as_str().into(),
            driver: self.driver_for(&row.hostgroup).name().into(),
            // The only `storage:` a host group takes (the node's writable layer or disk is
            // made from the tenant's image).
            storage: "image".into(),
            image: self.cfg.image.clone(),
            network: NodeNetworkDescription {
                mode: g.network.mode.as_str().into(),
                policy_source: if over.is_some() {
                    "override"
                } else {
                    "host_group"
                }
                .into(),
                host_group: group_policy,
                override_policy: over,
                effective,
            },
        })
    }

    /// Applies `update` to the node's tags in one store job (so concurrent updates never
    /// lose each other's tags) and returns the tags now.
    pub async fn update_tags(
        &self,
        node: &NodeRef,
        update: TagUpdate,
    ) -> Result<NodeTags, DomainError> {
        let name = node.name();
        if update.replace.is_some() && (!update.add.is_empty() || !update.remove.is_empty()) {
            return Err(DomainError::invalid(
                "give replace alone, or add and remove: replace cannot be combined with them",
            ));
        }
        for t in update.add.iter().chain(update.replace.iter().flatten()) {
            names::validate_tag(t).map_err(DomainError::invalid)?;
        }
        let row = self
            .store
            .update(name, move |r| {
                let mut tags = match update.replace {
                    Some(new) => new,
                    None => {
                        let mut t: Vec<String> = r
                            .tags
                            .iter()
                            .filter(|t| !update.remove.contains(t))
                            .cloned()
                            .collect();
                        t.extend(update.add);
                        t
                    }
                };
                // Set semantics, first occurrence kept, so the order a client gave survives.
                let mut seen = std::collections::HashSet::new();
                tags.retain(|t| seen.insert(t.clone()));
                if tags.len() > MAX_TAGS {
                    return Err(DomainError::invalid(format!(
                        "a node carries at most {MAX_TAGS} tags; this update would leave {}",
                        tags.len()
                    )));
                }
                r.tags = tags;
                Ok(())
            })
            .await?
            .ok_or_else(|| DomainError::no_node(name))?;
        Ok(NodeTags {
            hostname: name.to_string(),
            tags: row.tags.clone(),
        })
    }
}
