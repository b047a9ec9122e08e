//! Creating a node: validate the request against its host group, admit it, record it, pick
//! its address, prepare its directory and driver, hand the spec to a supervisor, and
//! optionally wait for its agent. Any failure after the record exists removes the node again.
//! A create runs in a task of its own (`power::to_completion`, ADR 0025): a caller that goes
//! away does not stop it halfway.

use bulkhead_api::{names, CreateNodeRequest};
use bulkhead_core::{Code, DomainError, HostGroup, NodeState};
use bulkhead_driver::{files, NodePrep, NodeSpec, Start};
use bulkhead_sandbox::Limits;
use bulkhead_store::{NewNode, NodeRow};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

use super::{Tenant, Wait};

/// Largest userdata script accepted (Slicer's cloud-init-sized scripts fit easily).
pub const MAX_USERDATA: usize = 256 * 1024;
use crate::fsutil::{ensure_dir, now_rfc3339, write_private};

/// Turns a supervisor's answer line into the node's init pid, or the create's error.
fn supervisor_answer(line: &str) -> Result<i32, DomainError> {
    if let Some(pid) = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
    {
        return Ok(pid);
    }
    let msg = line.trim().trim_start_matches("error ").to_string();
    Err(DomainError::internal(if msg.is_empty() {
        "node supervisor exited without a word".into()
    } else {
        format!("starting node: {msg}")
    }))
}

impl Tenant {
    fn validate_create(
        &self,
        g: &HostGroup,
        req: &CreateNodeRequest,
    ) -> Result<(u32, u64, Option<crate::network::Override>), DomainError> {
        if let Some(h) = &req.hostname {
            names::validate_label("hostname", h).map_err(DomainError::invalid)?;
            // A shared daemon's node names are unique across its tenants only because each
            // begins with its group's name (and group names are prefix-free across tenants).
            let prefix = format!("{}-", g.name);
            if self.cfg.shared_daemon && !(h.starts_with(&prefix) && h.len() > prefix.len()) {
                return Err(DomainError::invalid(format!(
                    "hostname {h:?} must begin with its host group's name and a dash on a shared daemon, e.g. \"{prefix}job-1\""
                )));
            }
        }
        for t in &req.tags {
            names::validate_tag(t).map_err(DomainError::invalid)?;
        }
        if req.tags.len() > 64 {
            return Err(DomainError::invalid("at most 64 tags per node"));
        }
        let cpus = req.cpus.unwrap_or(g.vcpu);
        if cpus == 0 || cpus > g.vcpu {
            return Err(DomainError::out_of_range(format!(
                "cpus {cpus} is outside 1..={} allowed by host group {:?}: ask for at most {}, or omit cpus for the group's",
                g.vcpu, g.name, g.vcpu
            )));
        }
        let ram = req.ram_bytes.unwrap_or(g.ram_bytes);
        if ram < (16 << 20) || ram > g.ram_bytes {
            return Err(DomainError::out_of_range(format!(
                "ram_bytes {ram} is outside 16 MiB..={} allowed by host group {:?}: ask for at most {}, or omit ram_bytes for the group's",
                g.ram_bytes, g.name, g.ram_bytes
            )));
        }
        let net_group = self.net.as_ref().and_then(|n| n.group(&g.name));
        if net_group.is_none() && (req.ip.is_some() || req.network.is_some()) {
            return Err(DomainError::invalid(format!(
                "host group {:?} has network mode none: ip and network are not accepted",
                g.name
            )));
        }
        if req.persistent {
            self.check_persistent(g)?; // #13, persistent nodes
        }
        let asked = req.slicer_only_set();
        if !asked.is_empty() {
            return Err(DomainError::new(
                Code::Unsupported,
                format!(
                    "{} cannot be honoured here (no GPUs or PCI devices are passed to nodes, nodes boot \
                     their host group's image, and nodes have no delete protection): omit {}, or send it empty",
                    asked.join(", "),
                    if asked.len() == 1 { "it" } else { "them" }
                ),
            ));
        }
        if let Some(u) = &req.userdata {
            if u.len() > MAX_USERDATA {
                return Err(DomainError::invalid(format!(
                    "userdata is {} bytes: at most {MAX_USERDATA} are accepted; copy larger files in with cp",
                    u.len()
                )));
            }
        }
        self.check_volume_request(&req.volumes, req.hostname.as_deref())?; // volumes (#13): ids, paths, holders
        let policy = match (self.net.as_ref(), net_group, &req.network) {
            (Some(n), Some(ng), Some(r)) => n
                .validate_override(ng, &r.allow, &r.drop)
                .map_err(DomainError::invalid)?,
            _ => None,
        };
        Ok((cpus, ram, policy))
    }

    /// Creates a node: validate, admit, record, start its supervisor, optionally wait for the
    /// agent. Any failure after the record exists removes the node again. It runs in a task
    /// of its own (ADR 0025): a caller that disconnects does not stop it, so the node either
    /// comes up and stays (as a retry would find it) or fails and is removed.
    pub async fn create(
        self: &std::sync::Arc<Self>,
        group: &str,
        req: CreateNodeRequest,
        wait: Wait,
        timeout: Duration,
    ) -> Result<super::conflict::Created, DomainError> {
        let (t, group) = (self.clone(), group.to_string());
        super::power::to_completion(async move { t.create_now(&group, req, wait, timeout).await })
            .await
    }

    async fn create_now(
        self: &std::sync::Arc<Self>,
        group: &str,
        req: CreateNodeRequest,
        wait: Wait,
        timeout: Duration,
    ) -> Result<super::conflict::Created, DomainError> {
        let asked_at = Instant::now();
        let g = self.group(group)?.clone();
        let (cpus, ram, policy) = self.validate_create(&g, &req)?;
        let ttl = req
            .timeout
            .as_ref()
            .map(|t| bulkhead_core::ttl::parse("timeout", t))
            .transpose()?; // #15, B: node TTL
        self.check_node_secrets(&req.secrets).await?; // secrets (#13): 400 naming unknown ones
        self.check_create_image(&req).await?; // #13: a commit of this tenant's, or its image
        let _slot = self.enqueue()?;
        let name = match &req.hostname {
            Some(h) => h.clone(),
            None => format!("{}-{}", g.name, self.store.next_index(&g.name).await?),
        };
        // The request's, else the host group's; an empty script is none.
        let userdata = req
            .userdata
            .clone()
            .or_else(|| g.userdata.clone())
            .filter(|u| !u.is_empty());
        // #12 (ADR 0025): the normalized request, recorded with the node for the conflict rule.
        let spec = super::conflict::CreateSpec::of(&g, &req, cpus, ram, userdata.as_deref());
        let new = NewNode {
            name: name.clone(),
            hostgroup: g.name.clone(),
            status: NodeState::Creating,
            ip: String::new(),
            cpus,
            ram_bytes: ram,
            tags: req.tags.clone(),
            persistent: req.persistent,
            created_at: now_rfc3339(),
            network: None,
            userdata,
            storage_bytes: Some(g.storage_bytes),
            spec: Some(spec.to_json()),
        };
        // The address is picked from the rows the store's writer sees and recorded with the
        // node in the same job, so concurrent creates never get the same slot.
        let (net, group, want_ip) = (self.net.clone(), g.name.clone(), req.ip.clone());
        let (me, named) = (self.clone(), req.hostname.is_some()); // #12
        let admitted = self
            .store
            .insert_with(new, move |snap, n| {
                // #12: the conflict rule and quotas, atomic with the insert (ADR 0025).
                me.admit(snap, &n.name, named, &spec)?;
                let Some((t, ng)) = net.as_ref().and_then(|t| t.group(&group).map(|ng| (t, ng)))
                else {
                    return Ok(None);
                };
                let used = snap
                    .group(&group)
                    .iter()
                    .filter_map(|r| r.ip.parse().ok())
                    .collect();
                let (slot, addr) = t.allocate(ng, &used, want_ip.as_deref())?;
                let nn = t.node_net(ng, slot, addr, policy);
                n.ip = addr.to_string();
                n.network = Some(serde_json::to_string(&nn).map_err(|e| {
                    DomainError::internal(format!("recording the node's network: {e}"))
                })?);
                Ok::<_, super::conflict::Admit>(Some(nn))
            })
            .await;
        let (row, node_net) = match admitted {
            Ok(x) => x,
            // #12: the same spec made by an earlier create (200), once it is as far as this
            // request's `wait` asks; or refused.
            Err(super::conflict::Admit::Existing(row)) => {
                self.wait_existing(&row.name, wait, asked_at + timeout)
                    .await?;
                return Ok(super::conflict::Created::of(&row, true));
            }
            Err(a) => return a.into_answer(),
        };
        self.counters.creates.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let result = async {
            // A host-work slot for the setup and the node's boot (a microVM's is host work),
            // not for its userdata (#12, rate: `crate::fair`).
            // Its boot keeps the slot for `fair::BOOT_SLOT_BUDGET` at most.
            // volumes (#13): the holders, recorded before anything of the node runs; they go
            // with the node's record.
            self.attach_volumes(&name, &req.volumes).await?;
            self.guard_guest_written(&g.name, &req.volumes)?; // #13: guest-written volumes
            let volumes = self.node_volumes(&g.name, &req.volumes)?; // #13, attach
            let permit = self.host_work(deadline).await?;
            self.start_supervisor(&row, &g, node_net.as_ref(), Start::Fresh, &volumes)
                .await?;
            let t_sup = t0.elapsed();
            let n = name.clone();
            self.store
                .transition(&name, move |s| s.started(&n))
                .await?;
            self.watch(&name);
            let boot = async {
                if wait != Wait::None {
                    self.wait_agent(&name, deadline).await?;
                }
                Ok::<(), DomainError>(())
            };
            (permit.hold_while(crate::fair::BOOT_SLOT_BUDGET, boot)).await?;
            // #13, attach: a microVM's volumes, mounted by its agent before any userdata.
            self.mount_in_guest(&name, &g.name, &volumes, deadline).await?;
            self.after_start(&name, wait, deadline).await?;
            if let Some(d) = ttl {
                self.expire_after_create(&name, d).await?; // #15, B: node TTL, from now
            }
            tracing::debug!(node = %name, supervisor_ms = t_sup.as_secs_f64() * 1e3, total_ms = t0.elapsed().as_secs_f64() * 1e3, "node created");
            Ok::<(), DomainError>(())
        }
        .await;
        if let Err(e) = result {
            self.counters
                .create_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %name, error = %e, "create failed; removing the node");
            self.destroy(&name).await;
            let _ = self.store.delete(&name).await;
            return Err(e);
        }
        self.ev_created(&row); // #14, part B
        Ok(super::conflict::Created::of(&row, false))
    }

    pub(super) async fn start_supervisor(
        &self,
        row: &NodeRow,
        g: &HostGroup,
        node_net: Option<&crate::network::NodeNet>,
        start: Start,
        volumes: &[bulkhead_driver::VolumeMount],
    ) -> Result<(), DomainError> {
        let dir = self.node_dir(&row.name);
        let network = match (self.net.as_ref(), node_net) {
            (Some(n), Some(nn)) => {
                let ng = n
                    .group(&g.name)
                    .ok_or_else(|| DomainError::internal("host group lost its network"))?;
                let plan = n
                    .plan(ng, nn)
                    .ok_or_else(|| DomainError::internal("node slot outside its range"))?;
                bulkhead_net::NetworkPlan::Veth(plan)
            }
            _ => bulkhead_net::NetworkPlan::Loopback,
        };
        let standby = self.pool.take().await;
        let counter = if standby.is_some() {
            &self.counters.standby_hits
        } else {
            &self.counters.standby_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let cgroup = standby
            .as_ref()
            .map(|s| s.cgroup.clone())
            .unwrap_or_else(crate::pool::random_id);
        // Recorded before anything runs in it, so delete and reconciliation always find it.
        self.store
            .set_cgroup(&row.name, Some(cgroup.clone()))
            .await?;
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| DomainError::internal(format!("{what}: {e}"))
        };
        // 0711: the node's own (mapped, unprivileged) root must traverse it to reach its mount
        // points; nobody else may list it. Its files are private to root.
        ensure_dir(&dir, 0o711).map_err(io("creating node directory"))?;
        // Everything on the host's filesystem is made here, outside the node's cgroup: page
        // cache a node's cgroup faults in first (even a directory block) keeps that cgroup
        // alive in the kernel after the node is gone, and such "dying" cgroups slow every
        // later cgroup operation down.
        for d in [files::ROOTFS, files::SCRATCH] {
            ensure_dir(&dir.join(d), 0o755).map_err(io("creating node mount points"))?;
        }
        write_private(&dir.join(files::CONSOLE_LOG), b"")
            .map_err(io("creating the console log"))?;
        // The driver's part: whatever it makes on the host for the node (a microVM's disk),
        // its parameters in the spec, and any change to the node's network plan.
        let (driver, group, node_dir, name) = (
            self.driver_for(&g.name).clone(),
            g.clone(),
            dir.clone(),
            row.name.clone(),
        );
        let (ram_bytes, cpus) = (row.ram_bytes, row.cpus);
        // #13 commit and fork: the commit's encrypted image, for the supervisor or for the
        // driver's preparation alone.
        let commit = self.commit_start(row, g).await?;
        // #13, persistent nodes: the layer (made at the first start) and its key.
        let layer = self.layer_for(row, g, start).await?;
        let pkey = layer
            .as_ref()
            .and_then(|(_, k)| bulkhead_storage::Secret::<64>::from_slice(k.expose()));
        let (tkey, tdir, prep_commit) = (self.key().clone(), self.dir.clone(), commit.prepare);
        let (params, network) = tokio::task::spawn_blocking(move || {
            let mut network = network;
            super::commit::with_commit_tree(&tkey, &tdir, prep_commit.as_ref(), |image_tree| {
                driver.prepare_node(NodePrep {
                    node: &name,
                    hostname: &name,
                    node_dir: &node_dir,
                    group: &group,
                    ram_bytes,
                    cpus,
                    network: &mut network,
                    start,
                    image_tree, // #13 commit and fork
                    persistent_key: pkey.as_ref().map(|k| k.expose()), // #13, persistent
                })
            })
            .map(|r| r.map(|p| (p, network)))
        })
        .await
        .map_err(|e| DomainError::internal(format!("preparing the node: {e}")))??
        .map_err(|e| DomainError::internal(format!("preparing the node: {e}")))?;
        let spec = NodeSpec {
            tenant: self.name.clone(),
            node: row.name.clone(),
            cgroup,
            hostname: row.name.clone(),
            node_dir: dir.clone(),
            uid_base: self.uid_base,
            uid_count: bulkhead_core::UID_COUNT,
            limits: Limits {
                memory_bytes: row.ram_bytes + self.driver_for(&g.name).memory_overhead(),
                millicpus: row.cpus as u64 * 1000,
                pids_max: g.pids_max,
            },
            network,
            driver: self.driver_for(&g.name).name().to_string(),
            params,
            cpuset: self.host.cores.node_cpus(&self.name, &g.name), // noisy neighbours (#12)
            volumes: volumes.to_vec(),                              // #13, attach
            persistent_layer: layer.as_ref().map(|(l, _)| l.clone()), // #13, persistent nodes
            commit_image: commit.mount.as_ref().map(|(m, _)| m.clone()), // #13 commit and fork
        };
        // The node's own nft objects exist before anything of it runs; the network recorded
        // with the node's row is what delete and reconciliation find them by.
        if let (Some(n), Some(nn)) = (self.net.as_ref(), node_net) {
            let (n, nn, name) = (n.clone(), nn.clone(), row.name.clone());
            tokio::task::spawn_blocking(move || n.attach(&name, &nn))
                .await
                .map_err(|e| DomainError::internal(format!("node network rules: {e}")))?
                .map_err(|e| DomainError::internal(format!("node network rules: {e}")))?;
        }
        let spec_path = dir.join(files::SPEC);
        let spec_bytes = spec.to_json();
        write_private(&spec_path, &spec_bytes).map_err(io("writing node spec"))?;
        // #13, attach: the spec's digest and its volumes' keys, on the supervisor's stdin.
        let keys: Vec<_> = (layer.iter().chain(commit.mount.iter())) // #13, persistent; commit
            .map(|(l, k)| (l.key_id.as_str(), k))
            .collect();
        let instruction = self.supervisor_instruction(&spec_bytes, volumes, &keys)?;
        drop(keys);
        drop((layer, commit.mount));
        if let Some(sb) = standby {
            match self.pool.hand_over(sb, &spec_path, &instruction).await {
                Ok((line, pid)) => {
                    self.note_supervisor_answer(&row.name, &line); // #13, attach
                    return self.record_supervisor(&dir, pid, supervisor_answer(&line)?);
                }
                // A standby that died in the pool: start a supervisor afresh for the same
                // cgroup id (a standby removes its slot when it fails).
                Err(e) => {
                    tracing::warn!(error = %e, "standby supervisor failed; starting one afresh")
                }
            }
        }
        let mut cmd = tokio::process::Command::new(&self.host.supervisor_bin);
        cmd.arg(&spec_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        // Its own process group: signals meant for the daemon's terminal or process group
        // never reach the node's supervisor. Without a pre_exec hook std can spawn with
        // posix_spawn (vfork), which skips copying the daemon's page tables.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(io("starting the node supervisor"))?;
        // #13, attach: the instruction, then EOF.
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(instruction.as_bytes()).await;
        }
        drop(instruction);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| DomainError::internal("supervisor has no stdout"))?;
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        // The supervisor lives on after this; tokio reaps it in the background when it exits.
        let pid = child.id().unwrap_or(0);
        drop(child);
        match read {
            Ok(Ok(_)) => {
                self.note_supervisor_answer(&row.name, &line); // #13, attach
                self.record_supervisor(&dir, pid, supervisor_answer(&line)?)
            }
            Ok(Err(e)) => Err(DomainError::internal(format!(
                "reading supervisor status: {e}"
            ))),
            Err(_) => Err(DomainError::internal(
                "node supervisor did not report within 60s",
            )),
        }
    }

    /// Records who supervises a node, so that a restarted daemon finds it again.
    fn record_supervisor(&self, dir: &Path, pid: u32, init_pid: i32) -> Result<(), DomainError> {
        let pid = pid as i32;
        let state = bulkhead_driver::SupervisorState {
            supervisor_pid: pid,
            supervisor_start: bulkhead_driver::spec::process_start_time(pid).unwrap_or(0),
            init_pid,
        };
        bulkhead_driver::spec::write_supervisor_state(dir, &state)
            .map_err(|e| DomainError::internal(format!("recording the supervisor: {e}")))
    }

    pub(super) async fn wait_agent(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<(), DomainError> {
        let sock = self.node_dir(name).join(files::AGENT_SOCKET);
        let mut last = String::new();
        let mut checked = Instant::now();
        while Instant::now() < deadline {
            // A node that died on the way (QEMU refused its arguments, the guest panicked)
            // will never answer: say so now, with what its console said.
            if checked.elapsed() > Duration::from_millis(200) {
                checked = Instant::now();
                if !self.node_alive(name).await {
                    let console = std::fs::read(self.node_dir(name).join(files::CONSOLE_LOG))
                        .unwrap_or_default();
                    let text = String::from_utf8_lossy(&console);
                    let tail: Vec<&str> = text.lines().rev().take(3).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(DomainError::new(Code::NodeFailed, format!(
                        "node {name:?} stopped before its agent answered; the node was removed. Its console ends: {:?}",
                        tail.join(" | ")
                    )));
                }
            }
            let client = bulkhead_agent::client::AgentClient::new(&sock);
            match tokio::time::timeout(Duration::from_secs(2), client.ping()).await {
                Ok(Ok(_)) => {
                    self.identity_ready(name).await; // workload identity (#11)
                    return Ok(());
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "ping timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(DomainError::new(
            Code::Timeout,
            format!("node {name:?}'s agent was not ready in time ({last}); the node was removed"),
        ))
    }
}
