//! The daemon's core: one tenant's host groups and nodes, their lifecycle, and reconciliation.
//! Handlers call into this with typed arguments; every tenant scoping decision is made here,
//! through [`App::node`], so that no handler can reach a node of another tenant.

use axum::http::StatusCode;
use bulkhead_api::{names, CreateNodeRequest, CreatedNode, Node, NodeStatus};
use bulkhead_core::{HostGroup, TenantConfig};
use bulkhead_jail::{files, Cgroups, JailSpec, Limits};
use bulkhead_store::{NodeRow, Store};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Creates and deletes beyond this many waiting at once answer 503.
pub const MAX_QUEUED_LIFECYCLE: usize = 256;
/// Node setups that run at once; the rest wait in the bounded queue above.
pub const PARALLEL_SETUPS: usize = 8;

/// Turns a supervisor's answer line into the node's init pid, or the create's error.
fn supervisor_answer(line: &str) -> Result<i32, ApiError> {
    if let Some(pid) = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
    {
        return Ok(pid);
    }
    let msg = line.trim().trim_start_matches("error ").to_string();
    Err(ApiError::internal(if msg.is_empty() {
        "node supervisor exited without a word".into()
    } else {
        format!("starting node: {msg}")
    }))
}

#[derive(Default)]
pub struct Counters {
    pub creates: AtomicU64,
    pub create_failures: AtomicU64,
    pub deletes: AtomicU64,
    pub execs: AtomicU64,
    pub not_found: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub standby_hits: AtomicU64,
    pub standby_misses: AtomicU64,
}

pub struct App {
    pub cfg: TenantConfig,
    pub tenant: String,
    pub tenant_dir: PathBuf,
    pub lower: PathBuf,
    pub agent_bin: PathBuf,
    /// The node seccomp filters, compiled at start, as [`bulkhead_jail::seccomp::encode`]d BPF.
    pub seccomp: Vec<Vec<u64>>,
    /// `bulkhead-supervisor`, started once per node.
    pub supervisor_bin: PathBuf,
    pub uid_base: u32,
    pub cgroups: Cgroups,
    pub store: Mutex<Store>,
    pub setups: Semaphore,
    pub standbys: tokio::sync::Mutex<Vec<crate::pool::Standby>>,
    pub refilling: std::sync::atomic::AtomicBool,
    /// Set at shutdown: no standby may join the pool any more.
    pub closing: std::sync::atomic::AtomicBool,
    pub queued: AtomicUsize,
    pub counters: Counters,
    pub started: Instant,
    /// The tenant's networking; `None` when every host group has network mode none.
    pub net: Option<std::sync::Arc<crate::network::TenantNetwork>>,
    pub forwards: crate::forward::Forwards,
    /// What the API listener has done (open, rejected, timed-out connections).
    pub conn_stats: std::sync::Arc<crate::serve::ConnStats>,
    /// Per-node turns at the agent (exec, copy): `gate.rs`.
    pub gates: crate::gate::Gates,
    /// The microVM driver, when `hypervisor: qemu`.
    pub vm: Option<std::sync::Arc<crate::vmdriver::VmRuntime>>,
}

pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (H. Hinnant), valid for the Unix era.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Releases a place in the lifecycle queue when dropped.
pub struct QueueSlot<'a>(&'a AtomicUsize);
impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl App {
    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.tenant_dir.join("nodes").join(name)
    }

    pub fn agent_socket(&self, name: &str) -> PathBuf {
        self.node_dir(name).join(files::AGENT_SOCKET)
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn to_api(row: &NodeRow) -> Node {
        Node {
            hostname: row.name.clone(),
            hostgroup: row.hostgroup.clone(),
            ip: row.ip.clone(),
            ram_bytes: row.ram_bytes,
            cpus: row.cpus,
            created_at: row.created_at.clone(),
            tags: row.tags.clone(),
            arch: std::env::consts::ARCH.into(),
            status: row.status,
            persistent: row.persistent,
        }
    }

    pub fn list(&self) -> Result<Vec<NodeRow>, ApiError> {
        Ok(self.store().list(&self.tenant)?)
    }

    /// The tenant-scoped lookup every node route goes through.
    pub fn node(&self, name: &str) -> Result<NodeRow, ApiError> {
        if names::validate_label("node", name).is_err() {
            return Err(ApiError::no_node(name));
        }
        match self.store().get(&self.tenant, name)? {
            Some(r) => Ok(r),
            None => {
                self.counters.not_found.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::no_node(name))
            }
        }
    }

    /// A node that is ready to serve exec and copy requests.
    pub fn running_node(&self, name: &str) -> Result<NodeRow, ApiError> {
        let n = self.node(name)?;
        match n.status {
            NodeStatus::Running => Ok(n),
            NodeStatus::Creating => Err(ApiError::conflict(
                "node_not_ready",
                format!("node {name:?} is still being created: retry, or create with ?wait=agent"),
            )),
            NodeStatus::Deleting => Err(ApiError::conflict(
                "node_deleting",
                format!("node {name:?} is being deleted"),
            )),
            s => Err(ApiError::conflict(
                "node_not_running",
                format!("node {name:?} is {}", s.as_str()),
            )),
        }
    }

    pub fn group(&self, name: &str) -> Result<&HostGroup, ApiError> {
        self.cfg.group(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "host group {name:?} not found: `GET /hostgroup` lists this tenant's groups"
            ))
        })
    }

    /// Takes a place in the bounded lifecycle queue, or answers 503.
    pub fn enqueue(&self) -> Result<QueueSlot<'_>, ApiError> {
        let n = self.queued.fetch_add(1, Ordering::SeqCst);
        let slot = QueueSlot(&self.queued);
        if n >= MAX_QUEUED_LIFECYCLE {
            self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("{MAX_QUEUED_LIFECYCLE} node operations are already queued: retry later"),
            )
            .retry_after(1));
        }
        Ok(slot)
    }

    fn validate_create(
        &self,
        g: &HostGroup,
        req: &CreateNodeRequest,
    ) -> Result<(u32, u64, Option<crate::network::Override>), ApiError> {
        if let Some(h) = &req.hostname {
            names::validate_label("hostname", h).map_err(ApiError::bad_request)?;
        }
        for t in &req.tags {
            names::validate_tag(t).map_err(ApiError::bad_request)?;
        }
        if req.tags.len() > 64 {
            return Err(ApiError::bad_request("at most 64 tags per node"));
        }
        let cpus = req.cpus.unwrap_or(g.vcpu);
        if cpus == 0 || cpus > g.vcpu {
            return Err(ApiError::out_of_range(format!(
                "cpus {cpus} is outside 1..={} allowed by host group {:?}: ask for at most {}, or omit cpus for the group's",
                g.vcpu, g.name, g.vcpu
            )));
        }
        let ram = req.ram_bytes.unwrap_or(g.ram_bytes);
        if ram < (16 << 20) || ram > g.ram_bytes {
            return Err(ApiError::out_of_range(format!(
                "ram_bytes {ram} is outside 16 MiB..={} allowed by host group {:?}: ask for at most {}, or omit ram_bytes for the group's",
                g.ram_bytes, g.name, g.ram_bytes
            )));
        }
        let net_group = self.net.as_ref().and_then(|n| n.group(&g.name));
        if net_group.is_none() && (req.ip.is_some() || req.network.is_some()) {
            return Err(ApiError::bad_request(format!(
                "host group {:?} has network mode none: ip and network are not accepted",
                g.name
            )));
        }
        if !req.secrets.is_empty() {
            return Err(ApiError::bad_request(
                "secrets are not supported by this build yet: remove the secrets field",
            ));
        }
        if req.userdata.is_some() || g.userdata.is_some() {
            return Err(ApiError::bad_request(
                "userdata is not supported by this build yet: run it with exec after ?wait=agent",
            ));
        }
        let policy = match (self.net.as_ref(), net_group, &req.network) {
            (Some(n), Some(ng), Some(r)) => n
                .validate_override(ng, &r.allow, &r.drop)
                .map_err(ApiError::bad_request)?,
            _ => None,
        };
        Ok((cpus, ram, policy))
    }

    /// Creates a node: validate, admit, record, start its supervisor, optionally wait for the
    /// agent. Any failure after the record exists removes the node again.
    pub async fn create(
        self: &std::sync::Arc<Self>,
        group: &str,
        req: CreateNodeRequest,
        wait_agent: bool,
        timeout: Duration,
    ) -> Result<CreatedNode, ApiError> {
        let g = self.group(group)?.clone();
        let (cpus, ram, policy) = self.validate_create(&g, &req)?;
        let _slot = self.enqueue()?;
        let name = match &req.hostname {
            Some(h) => h.clone(),
            None => format!(
                "{}-{}",
                g.name,
                self.store().next_index(&self.tenant, &g.name)?
            ),
        };
        let mut row = NodeRow {
            tenant: self.tenant.clone(),
            name: name.clone(),
            hostgroup: g.name.clone(),
            status: NodeStatus::Creating,
            ip: String::new(),
            cpus,
            ram_bytes: ram,
            tags: req.tags.clone(),
            persistent: req.persistent,
            created_at: now_rfc3339(),
        };
        // The address is picked and recorded under one store lock, so concurrent creates
        // never get the same slot.
        let node_net = {
            let store = self.store();
            let node_net = match self
                .net
                .as_ref()
                .and_then(|n| n.group(&g.name).map(|ng| (n, ng)))
            {
                Some((n, ng)) => {
                    let used = store
                        .list(&self.tenant)?
                        .into_iter()
                        .filter(|r| r.hostgroup == g.name)
                        .filter_map(|r| r.ip.parse().ok())
                        .collect();
                    let (slot, addr) = n.allocate(ng, &used, req.ip.as_deref())?;
                    row.ip = addr.to_string();
                    Some(n.node_net(ng, slot, addr, policy))
                }
                None => None,
            };
            store.insert(&row)?;
            node_net
        };
        self.counters.creates.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let result = async {
            let _permit = self.setups.acquire().await.map_err(|_| ApiError::internal("shutting down"))?;
            self.start_supervisor(&row, &g, node_net.as_ref()).await?;
            let t_sup = t0.elapsed();
            self.store().set_status(&self.tenant, &name, NodeStatus::Running)?;
            if wait_agent {
                self.wait_agent(&name, deadline).await?;
            }
            tracing::debug!(node = %name, supervisor_ms = t_sup.as_secs_f64() * 1e3, total_ms = t0.elapsed().as_secs_f64() * 1e3, "node created");
            Ok::<(), ApiError>(())
        }
        .await;
        if let Err(e) = result {
            self.counters
                .create_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %name, error = %e, "create failed; removing the node");
            self.destroy(&name).await;
            let _ = self.store().delete(&self.tenant, &name);
            return Err(e);
        }
        Ok(CreatedNode {
            hostname: name,
            hostgroup: g.name.clone(),
            ip: row.ip.clone(),
            created_at: row.created_at,
            arch: std::env::consts::ARCH.into(),
        })
    }

    async fn start_supervisor(
        self: &std::sync::Arc<Self>,
        row: &NodeRow,
        g: &HostGroup,
        node_net: Option<&crate::network::NodeNet>,
    ) -> Result<(), ApiError> {
        let dir = self.node_dir(&row.name);
        let network = match (self.net.as_ref(), node_net) {
            (Some(n), Some(nn)) => {
                let ng = n
                    .group(&g.name)
                    .ok_or_else(|| ApiError::internal("host group lost its network"))?;
                let plan = n
                    .plan(ng, nn)
                    .ok_or_else(|| ApiError::internal("node slot outside its range"))?;
                bulkhead_net::NetworkPlan::Veth(plan)
            }
            _ => bulkhead_net::NetworkPlan::Loopback,
        };
        let standby = self.standbys.lock().await.pop();
        let counter = if standby.is_some() {
            &self.counters.standby_hits
        } else {
            &self.counters.standby_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.refill();
        let spec = JailSpec {
            tenant: self.tenant.clone(),
            node: row.name.clone(),
            cgroup: standby
                .as_ref()
                .map(|s| s.cgroup.clone())
                .unwrap_or_else(crate::pool::random_id),
            hostname: row.name.clone(),
            node_dir: dir.clone(),
            lower: self.lower.clone(),
            agent_bin: self.agent_bin.clone(),
            uid_base: self.uid_base,
            uid_count: bulkhead_core::UID_COUNT,
            limits: Limits {
                memory_bytes: row.ram_bytes,
                millicpus: row.cpus as u64 * 1000,
                pids_max: g.pids_max,
            },
            storage_bytes: bulkhead_core::jail_layer_bytes(g.storage_bytes, row.ram_bytes),
            user_sysctls: g.kernel_limits.user_sysctls(),
            network,
            seccomp: self.seccomp.clone(),
            vm: None,
        };
        let mut spec = spec;
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| ApiError::internal(format!("{what}: {e}"))
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
        if let Some(rt) = self.vm.clone() {
            // The guest owns the node's address; QEMU's namespace only bridges its tap.
            let net = match &mut spec.network {
                bulkhead_net::NetworkPlan::Veth(v) => {
                    v.guest_tap = Some(self.uid_base + bulkhead_vm::QEMU_UID);
                    Some(bulkhead_vm::GuestNet {
                        address: v.address,
                        prefix_len: v.prefix_len,
                        gateway: v.gateway,
                        dns: v.dns_servers.clone(),
                    })
                }
                bulkhead_net::NetworkPlan::Loopback => None,
            };
            let n = crate::vmdriver::NodeVm {
                net,
                node_dir: dir.clone(),
                image: self.cfg.image.clone(),
                hostname: row.name.clone(),
                ram_bytes: row.ram_bytes,
                vcpus: row.cpus,
                disk_bytes: g.storage_bytes,
                uid_base: self.uid_base,
            };
            let vm = tokio::task::spawn_blocking(move || rt.node(&n))
                .await
                .map_err(|e| ApiError::internal(format!("preparing the microVM: {e}")))?
                .map_err(|e| ApiError::internal(format!("preparing the microVM: {e}")))?;
            spec.limits.memory_bytes += bulkhead_vm::MEMORY_OVERHEAD;
            spec.vm = Some(vm);
        }
        // The node's own nft objects exist before anything of it runs; network.json is what
        // delete and reconciliation find them by.
        if let (Some(n), Some(nn)) = (self.net.as_ref(), node_net) {
            write_private(
                &dir.join(crate::network::NODE_NET_FILE),
                &serde_json::to_vec(nn).unwrap_or_default(),
            )
            .map_err(io("recording the node's network"))?;
            let (n, nn, name) = (n.clone(), nn.clone(), row.name.clone());
            tokio::task::spawn_blocking(move || n.attach(&name, &nn))
                .await
                .map_err(|e| ApiError::internal(format!("node network rules: {e}")))?
                .map_err(|e| ApiError::internal(format!("node network rules: {e}")))?;
        }
        let spec_path = dir.join(files::SPEC);
        write_private(
            &spec_path,
            &serde_json::to_vec_pretty(&spec).unwrap_or_default(),
        )
        .map_err(io("writing node spec"))?;
        if let Some(sb) = standby {
            match self.hand_over(sb, &spec_path).await {
                Ok((line, pid)) => {
                    return self.record_supervisor(&dir, pid, supervisor_answer(&line)?)
                }
                // A standby that died in the pool: start a supervisor afresh for the same
                // cgroup id (a standby removes its slot when it fails).
                Err(e) => {
                    tracing::warn!(error = %e, "standby supervisor failed; starting one afresh")
                }
            }
        }
        let mut cmd = tokio::process::Command::new(&self.supervisor_bin);
        cmd.arg(&spec_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        // Its own process group: signals meant for the daemon's terminal or process group
        // never reach the node's supervisor. Without a pre_exec hook std can spawn with
        // posix_spawn (vfork), which skips copying the daemon's page tables.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(io("starting the node supervisor"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ApiError::internal("supervisor has no stdout"))?;
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
            Ok(Ok(_)) => self.record_supervisor(&dir, pid, supervisor_answer(&line)?),
            Ok(Err(e)) => Err(ApiError::internal(format!(
                "reading supervisor status: {e}"
            ))),
            Err(_) => Err(ApiError::internal(
                "node supervisor did not report within 60s",
            )),
        }
    }

    /// Records who supervises a node, so that a restarted daemon finds it again.
    fn record_supervisor(&self, dir: &Path, pid: u32, init_pid: i32) -> Result<(), ApiError> {
        let pid = pid as i32;
        let state = bulkhead_jail::SupervisorState {
            supervisor_pid: pid,
            supervisor_start: bulkhead_jail::process_start_time(pid).unwrap_or(0),
            init_pid,
        };
        bulkhead_jail::write_supervisor_state(dir, &state)
            .map_err(|e| ApiError::internal(format!("recording the supervisor: {e}")))
    }

    async fn wait_agent(&self, name: &str, deadline: Instant) -> Result<(), ApiError> {
        let sock = self.agent_socket(name);
        let mut last = String::new();
        let mut checked = Instant::now();
        while Instant::now() < deadline {
            // A node that died on the way (QEMU refused its arguments, the guest panicked)
            // will never answer: say so now, with what its console said.
            if checked.elapsed() > Duration::from_millis(200) {
                checked = Instant::now();
                if !self.node_alive(name) {
                    let console = std::fs::read(self.console_log(name)).unwrap_or_default();
                    let text = String::from_utf8_lossy(&console);
                    let tail: Vec<&str> = text.lines().rev().take(3).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(ApiError::node_failed(format!(
                        "node {name:?} stopped before its agent answered; the node was removed. Its console ends: {:?}",
                        tail.join(" | ")
                    )));
                }
            }
            match tokio::time::timeout(Duration::from_secs(2), bulkhead_agent::client::ping(&sock))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "ping timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("node {name:?}'s agent was not ready in time ({last}); the node was removed"),
        ))
    }

    /// Stops a node's processes and removes everything it left on the host. Idempotent.
    pub async fn destroy(&self, name: &str) {
        self.forwards.close_node(name);
        self.gates.remove(name);
        let dir = self.node_dir(name);
        if let Some(st) = bulkhead_jail::read_supervisor_state(&dir) {
            if bulkhead_jail::supervisor_alive(&st) {
                // SAFETY: plain kill of the supervisor we recorded, verified by its start time.
                unsafe { libc::kill(st.supervisor_pid, libc::SIGTERM) };
                let until = Instant::now() + Duration::from_secs(5);
                while bulkhead_jail::supervisor_alive(&st) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if bulkhead_jail::supervisor_alive(&st) {
                    // SAFETY: as above.
                    unsafe { libc::kill(st.supervisor_pid, libc::SIGKILL) };
                }
            }
        }
        let (cg, tenant, net) = (self.cgroups.clone(), self.tenant.clone(), self.net.clone());
        let r = tokio::task::spawn_blocking(move || {
            if let (Some(n), Some(nn)) = (net, crate::network::read_node_net(&dir)) {
                n.detach(&nn);
            }
            bulkhead_jail::cleanup(&cg, &tenant, &dir)
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::error!(node = %name, error = %e, "cleanup failed; reconciliation will retry");
        }
    }

    pub async fn delete(&self, group: &str, name: &str) -> Result<(), ApiError> {
        let n = self.node(name)?;
        if n.hostgroup != group {
            return Err(ApiError::no_node(name));
        }
        let _slot = self.enqueue()?;
        match n.status {
            NodeStatus::Creating => {
                return Err(ApiError::conflict(
                    "node_not_ready",
                    format!(
                        "node {name:?} is still being created: delete it once the create returns"
                    ),
                ))
            }
            NodeStatus::Deleting => {
                return Err(ApiError::conflict(
                    "node_deleting",
                    format!("node {name:?} is already being deleted"),
                ))
            }
            _ => {}
        }
        // Only one of concurrent deletes wins the transition.
        {
            let store = self.store();
            match store.get(&self.tenant, name)? {
                Some(r) if r.status != NodeStatus::Deleting => {
                    store.set_status(&self.tenant, name, NodeStatus::Deleting)?;
                }
                Some(_) => {
                    return Err(ApiError::conflict(
                        "node_deleting",
                        format!("node {name:?} is already being deleted"),
                    ))
                }
                None => return Err(ApiError::no_node(name)),
            }
        }
        self.destroy(name).await;
        self.store().delete(&self.tenant, name)?;
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Brings state and host into agreement after a start or crash: adopts nodes whose
    /// supervisor still runs, removes nodes whose supervisor is gone, and removes node
    /// directories and cgroups that state does not explain.
    pub async fn reconcile(&self) -> (usize, usize) {
        let rows = self.list().unwrap_or_default();
        let (mut adopted, mut removed) = (0, 0);
        for r in &rows {
            let dir = self.node_dir(&r.name);
            let alive = bulkhead_jail::read_supervisor_state(&dir)
                .map(|s| bulkhead_jail::supervisor_alive(&s))
                .unwrap_or(false);
            if alive && matches!(r.status, NodeStatus::Running | NodeStatus::Paused) {
                adopted += 1;
                tracing::info!(node = %r.name, "re-adopted running node");
                continue;
            }
            tracing::warn!(node = %r.name, status = r.status.as_str(), alive, "node lost or half-made; removing it");
            self.destroy(&r.name).await;
            let _ = self.store().delete(&self.tenant, &r.name);
            removed += 1;
        }
        let known: Vec<String> = self
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let strays: Vec<String> = std::fs::read_dir(self.tenant_dir.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for s in strays.into_iter().filter(|s| !known.contains(s)) {
            tracing::warn!(node = %s, "removing leftovers of a node that state does not know");
            self.destroy(&s).await;
            removed += 1;
        }
        // Cgroups that no known node's spec names: slots of standbys from a daemon that died,
        // or nodes whose directory is already gone. Removing them kills what is inside.
        let live: Vec<String> = known
            .iter()
            .filter_map(|n| bulkhead_jail::spec_cgroup(&self.node_dir(n)))
            .collect();
        let pooled: Vec<String> = self
            .standbys
            .lock()
            .await
            .iter()
            .map(|s| s.cgroup.clone())
            .collect();
        for id in self.cgroups.tenant_cgroups(&self.tenant) {
            if !live.contains(&id) && !pooled.contains(&id) {
                tracing::warn!(cgroup = %id, "removing a cgroup that no node explains");
                if let Err(e) = self.cgroups.node(&self.tenant, &id).remove() {
                    tracing::error!(cgroup = %id, error = %e, "cannot remove stray cgroup");
                }
                removed += 1;
            }
        }
        (adopted, removed)
    }

    /// Deletes every node of the tenant (daemon stop with graceful_shutdown: false).
    pub async fn delete_all(&self) {
        self.drain_standbys().await;
        for r in self.list().unwrap_or_default() {
            let _ = self
                .store()
                .set_status(&self.tenant, &r.name, NodeStatus::Deleting);
            self.destroy(&r.name).await;
            let _ = self.store().delete(&self.tenant, &r.name);
        }
        self.cgroups.remove_tenant_if_empty(&self.tenant);
    }

    /// The recorded networks of the nodes state knows (after reconciliation: the live ones).
    pub fn live_node_nets(&self) -> Vec<(String, crate::network::NodeNet)> {
        self.list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                crate::network::read_node_net(&self.node_dir(&r.name)).map(|n| (r.name, n))
            })
            .collect()
    }

    /// Whether the node's supervisor (and so the node) still runs.
    pub fn node_alive(&self, name: &str) -> bool {
        bulkhead_jail::read_supervisor_state(&self.node_dir(name))
            .is_some_and(|s| bulkhead_jail::supervisor_alive(&s))
    }

    /// Records that a node's init exited on its own; delete still cleans it up.
    pub fn mark_stopped(&self, name: &str) {
        let _ = self
            .store()
            .set_status(&self.tenant, name, NodeStatus::Stopped);
    }

    pub fn console_log(&self, name: &str) -> PathBuf {
        self.node_dir(name).join(files::CONSOLE_LOG)
    }
}

/// Writes a file readable by root only.
pub fn write_private(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(data)
}

pub fn ensure_dir(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}
