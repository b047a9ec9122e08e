//! Containers in a node (#16, B2): the per-node registry the containers routes keep, and the
//! operations behind them. A container is a rootfs uploaded into the node at
//! `bulkhead_api::containers::rootfs_dir(id)`, mounts made under it, and processes that run
//! chrooted there (`container=` execs, which carry its id).
//!
//! Invariants:
//! - the registry lives in the daemon's memory only, per node, and is forgotten with the node
//!   (like background execs, ADR 0016); a restarted daemon lists no container (their trees and
//!   mounts stay in the node until the node goes);
//! - a container is listed (and `container=` finds it) only once its mounts are made; an id
//!   being created or deleted answers 409 to a second create or a rootfs upload;
//! - mounts are made by whoever the node's driver says (`Driver::container_mounts`): the jail's
//!   supervisor on its control channel, or a microVM guest's agent; the tree is removed only
//!   after every mount under it is gone (a failed unmount keeps the container listed).

use std::time::Duration;

use bulkhead_agent::client::AgentConn;
use bulkhead_agent::containers::{ContainerMount as WireMount, MountKind as WireKind};
use bulkhead_agent::proto::{Request, CAP_CONTAINERS};
use bulkhead_api::containers::{
    rootfs_dir, validate_container_id, ContainerInfo, ContainerMount, CreateContainerRequest,
    MountKind, CONTAINERS_DIR,
};
use bulkhead_core::{Code, DomainError};
use bulkhead_driver::control::{self, client};
use bulkhead_driver::ContainerMounts;

use super::container_registry::Entry;
use super::{NodeRef, Tenant};

/// How long the supervisor may take to make or remove a container's mounts.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a container's processes get between SIGTERM and SIGKILL at delete.
const KILL_GRACE: Duration = Duration::from_secs(2);

fn not_found(node: &str, id: &str) -> DomainError {
    DomainError::not_found(format!(
        "node {node:?} has no container {id:?}: create it with POST /vm/{node}/containers"
    ))
}

fn bad_id(id: &str) -> Result<(), DomainError> {
    validate_container_id(id).map_err(DomainError::invalid)
}

/// The agent's wire shape of a mount (the same fields as the API's).
fn wire(m: &ContainerMount) -> WireMount {
    WireMount {
        destination: m.destination.clone(),
        kind: match m.kind {
            MountKind::Proc => WireKind::Proc,
            MountKind::Dev => WireKind::Dev,
            MountKind::Sys => WireKind::Sys,
            MountKind::Devpts => WireKind::Devpts,
            MountKind::Mqueue => WireKind::Mqueue,
            MountKind::Tmpfs => WireKind::Tmpfs,
        },
        read_only: m.read_only,
        size_bytes: m.size_bytes,
        mode: m.mode,
    }
}

/// A refused mount: the container's own rootfs (a planted symlink, a file where a directory
/// goes) is the caller's input, 400; anything else is the node's failure.
fn refusal(n: &NodeRef, m: String) -> DomainError {
    let code = if m.contains("never follow symlinks") || m.contains("must be an absolute path") {
        Code::InvalidRequest
    } else {
        Code::Internal
    };
    DomainError::new(
        code,
        format!("container mounts in node {:?}: {m}", n.name()),
    )
}

impl Tenant {
    /// The root (inside the node) of container `cid` of `node`, for `container=` execs; 404
    /// naming the container when the node has none such.
    pub fn container_root(&self, node: &str, cid: &str) -> Result<String, DomainError> {
        bad_id(cid)?;
        match self.containers.get(node, cid) {
            Some(Entry::Ready(c)) => Ok(c.root),
            _ => Err(not_found(node, cid)),
        }
    }

    /// The node's containers, by id.
    pub fn list_containers(&self, node: &NodeRef) -> Vec<ContainerInfo> {
        self.containers.ready(node.name())
    }

    /// Before a rootfs upload: the id is valid, the agent unpacks with owners kept, and the
    /// container is not mounted (409: delete it first).
    pub async fn check_rootfs_upload(&self, n: &NodeRef, cid: &str) -> Result<(), DomainError> {
        bad_id(cid)?;
        if self.containers.get(n.name(), cid).is_some() {
            return Err(DomainError::new(
                Code::Conflict,
                format!(
                    "container {cid:?} of node {:?} exists (its mounts are made): delete it before uploading its rootfs again",
                    n.name()
                ),
            ));
        }
        self.require_containers(n).await
    }

    async fn require_containers(&self, n: &NodeRef) -> Result<(), DomainError> {
        if self.agent_info(n).await?.has(CAP_CONTAINERS) {
            return Ok(());
        }
        Err(DomainError::new(
            Code::Conflict,
            format!(
                "node {:?}'s agent is older than containers (#16): relaunch the node to give it the current agent",
                n.name()
            ),
        ))
    }

    /// Makes a container of an uploaded rootfs: its mounts, then it is listed.
    pub async fn create_container(
        &self,
        n: &NodeRef,
        req: CreateContainerRequest,
    ) -> Result<ContainerInfo, DomainError> {
        bad_id(&req.id)?;
        let root = rootfs_dir(&req.id);
        let mounts: Vec<WireMount> = req.mounts.iter().map(wire).collect();
        bulkhead_agent::containers::check(&root, &mounts)
            .map_err(|e| DomainError::invalid(e.to_string()))?;
        if !self.containers.reserve(n.name(), &req.id) {
            return Err(DomainError::new(
                Code::Conflict,
                format!(
                    "node {:?} has a container {:?} already: delete it first, or pick another id",
                    n.name(),
                    req.id
                ),
            ));
        }
        let r = self.make_container(n, &root, &req, mounts).await;
        let info = r.as_ref().ok().cloned().map(Entry::Ready);
        self.containers.set(n.name(), &req.id, info);
        r
    }

    async fn make_container(
        &self,
        n: &NodeRef,
        root: &str,
        req: &CreateContainerRequest,
        mounts: Vec<WireMount>,
    ) -> Result<ContainerInfo, DomainError> {
        self.require_containers(n).await?;
        match self.fs_stat(n, root).await {
            Ok(i) if i.kind == "directory" => {}
            Ok(_) | Err(_) => {
                return Err(DomainError::not_found(format!(
                    "container {:?} of node {:?} has no rootfs: upload it first with PUT /vm/{}/containers/{}/rootfs",
                    req.id,
                    n.name(),
                    n.name(),
                    req.id
                )))
            }
        }
        self.mount_op(
            n,
            control::Request::ContainerMounts {
                root: root.to_string(),
                mounts,
                readonly: req.readonly,
            },
        )
        .await?;
        Ok(ContainerInfo {
            id: req.id.clone(),
            root: root.to_string(),
            mounts: req.mounts.clone(),
            readonly: req.readonly,
        })
    }

    /// Deletes a container: kills its processes, removes its mounts, then its tree.
    pub async fn delete_container(&self, n: &NodeRef, cid: &str) -> Result<(), DomainError> {
        bad_id(cid)?;
        let Some(Entry::Ready(info)) = self.containers.get(n.name(), cid) else {
            return Err(not_found(n.name(), cid));
        };
        self.containers.set(n.name(), cid, Some(Entry::Busy));
        let r = self.remove_container(n, cid).await;
        self.containers
            .set(n.name(), cid, r.is_err().then_some(Entry::Ready(info)));
        r
    }

    async fn remove_container(&self, n: &NodeRef, cid: &str) -> Result<(), DomainError> {
        for e in self.bg.running(n.name()) {
            if e.launch.opts.container.as_deref() == Some(cid) {
                let _ = e.kill(libc::SIGTERM, KILL_GRACE).await;
            }
        }
        let root = rootfs_dir(cid);
        self.mount_op(n, control::Request::ContainerUnmount { root })
            .await?;
        self.fs_remove(n, &format!("{CONTAINERS_DIR}/{cid}"), true)
            .await
            .or_else(|e| {
                if e.code == Code::PathNotFound || e.code == Code::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
    }

    /// Makes or removes mounts where the node's driver says: its supervisor or its agent.
    async fn mount_op(&self, n: &NodeRef, req: control::Request) -> Result<(), DomainError> {
        let failed = |m: String| {
            DomainError::new(
                Code::Internal,
                format!("container mounts in node {:?}: {m}", n.name()),
            )
        };
        match self.driver_for(n.group()).container_mounts() {
            ContainerMounts::Supervisor => {
                let dir = self.node_dir(n.name());
                match client::request_async(&dir, req, Some(MOUNT_TIMEOUT)).await {
                    Ok(_) => Ok(()),
                    Err(client::ControlError::Refused(m)) => Err(refusal(n, m)),
                    Err(e) => Err(failed(e.to_string())),
                }
            }
            ContainerMounts::Agent => {
                let agent_req = match req {
                    control::Request::ContainerMounts {
                        root,
                        mounts,
                        readonly,
                    } => Request::ContainerMounts {
                        root,
                        mounts,
                        readonly,
                    },
                    control::Request::ContainerUnmount { root } => {
                        Request::ContainerUnmount { root }
                    }
                    _ => return Err(failed("not a container mount request".into())),
                };
                let info = self.agent_info(n).await?;
                let conn = AgentConn::with_peer(self.agent_conn(n).await?, Some(info));
                conn.container_mounts(agent_req)
                    .await
                    .map_err(|e| refusal(n, e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent keeps its own copy of the API's mount types (it does not depend on the API
    /// crate): every kind, with every field, must read the same on both sides of the wire.
    #[test]
    fn the_agents_mount_types_are_the_apis() {
        use MountKind::*;
        for kind in [Proc, Dev, Sys, Devpts, Mqueue, Tmpfs] {
            for (size_bytes, mode) in [(None, None), (Some(1 << 20), Some(0o755))] {
                let m = ContainerMount {
                    destination: "/x/y".into(),
                    kind,
                    read_only: true,
                    size_bytes,
                    mode,
                };
                let api = serde_json::to_value(&m).unwrap();
                assert_eq!(api, serde_json::to_value(wire(&m)).unwrap(), "{kind:?}");
                let back: WireMount = serde_json::from_value(api).unwrap();
                assert_eq!(back, wire(&m));
            }
        }
        assert_eq!(
            bulkhead_agent::containers::CONTAINERS_DIR,
            bulkhead_api::containers::CONTAINERS_DIR
        );
    }
}
