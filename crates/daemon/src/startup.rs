//! Daemon startup and shutdown: the host-wide tenant claim, the uid range, state, image,
//! agent, drivers, reconciliation, the listener with its authenticator, and what happens to
//! nodes at stop (`graceful_shutdown`).

use bulkhead_core::{DaemonConfig, TenantConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::app::{App, Daemon};
use crate::fsutil::ensure_dir;
use crate::prepare::{claim_uid_range, companion, install_agent, UidClaim};
pub use crate::prepare::{ensure_image, host_facts, UID_REGISTRY};
use crate::services::HostServices;
use crate::start_error::io;
pub use crate::start_error::StartError;
use crate::tenant::{Tenant, TenantParts};
use crate::{forward, host_limits, listen, network, tenant_lock};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/bulkhead";
/// A tenant the daemon opened: its context and what it holds on the host until stop.
struct Opened {
    app: Arc<App>,
    net: Option<Arc<network::TenantNetwork>>,
    net_claim: Option<network::NetClaim>,
    _uid: UidClaim,
    _lock: tenant_lock::TenantLock,
}

/// Where a daemon keeps what is its own rather than a tenant's (API tokens, the workload
/// identity keys): a one-tenant daemon in its tenant's directory, a shared daemon in
/// `<state>/shared`, claimed with an flock so that two shared daemons never share it.
struct DaemonDir {
    path: PathBuf,
    _lock: Option<tenant_lock::TenantLock>,
}

fn daemon_dir(
    cfg: &DaemonConfig,
    state_root: &Path,
    holder: &tenant_lock::Holder,
) -> Result<DaemonDir, StartError> {
    if !cfg.shared {
        let t = &cfg.tenants[0].tenant;
        return Ok(DaemonDir {
            path: state_root.join("tenants").join(t),
            _lock: None,
        });
    }
    let path = state_root.join("shared");
    let lock = tenant_lock::lock_tenant(&path, "daemon", holder).map_err(|e| match e {
        tenant_lock::LockError::Refused(m) => StartError::Refused(format!(
            "{} is in use by another shared daemon: give this one its own state_dir ({m})",
            path.display()
        )),
        tenant_lock::LockError::Io { what, source } => StartError::Io { what, source },
    })?;
    ensure_dir(&path, 0o700).map_err(io(format!("creating {}", path.display())))?;
    Ok(DaemonDir {
        path,
        _lock: Some(lock),
    })
}

/// Opens one tenant: claims it host-wide, its uid range and address ranges, state, image,
/// agent, driver, store; reconciles its nodes and network; refills its standby pool.
async fn open_tenant(
    cfg: &TenantConfig,
    entries: &[bulkhead_driver::DriverEntry],
    host: &Arc<HostServices>,
    state_root: &Path,
    holder: &tenant_lock::Holder,
) -> Result<Opened, StartError> {
    let tenant = cfg.tenant.clone();
    // The tenant is host-wide: claim it before anything of it is looked at or touched (state,
    // uid range, cgroups, nft, addresses), whatever the state directory.
    let lock = tenant_lock::lock_tenant(Path::new(tenant_lock::TENANT_REGISTRY), &tenant, holder)?;
    let tenant_dir = state_root.join("tenants").join(&tenant);
    ensure_dir(&state_root.join("tenants"), 0o711).map_err(io("creating tenant state"))?;
    ensure_dir(&tenant_dir, 0o711).map_err(io("creating tenant state"))?;
    ensure_dir(&tenant_dir.join("nodes"), 0o711).map_err(io("creating tenant state"))?;
    let uid_base = bulkhead_core::uid_base(&tenant);
    let uid = claim_uid_range(&tenant, uid_base)?;
    let known_groups = network::load_indexes(&tenant_dir);
    let net = network::TenantNetwork::from_config(cfg, uid_base, &known_groups)?.map(Arc::new);
    if let Some(n) = &net {
        network::save_indexes(&tenant_dir, &n.indexes(&known_groups))
            .map_err(io("recording the network groups"))?;
    }
    let net_claim = match &net {
        Some(_) => Some(network::claim_ranges(
            Path::new(network::NET_REGISTRY),
            &tenant,
            &holder.api,
            &cfg.groups,
        )?),
        None => None,
    };
    ensure_image(state_root, &cfg.image)?;
    let self_exe = std::env::current_exe().map_err(io("locating our own executable"))?;
    let agent_bin = install_agent(&tenant_dir, &companion(&self_exe, "bulkhead-agent")?)?;
    // The tenant's drivers, ready on this host (a microVM's guest kernel may take a while).
    let mut opened_drivers = Vec::new();
    for entry in entries {
        let (open, name) = (entry.open, entry.name);
        let (sr, td, ab, image, tn) = (
            state_root.to_path_buf(),
            tenant_dir.clone(),
            agent_bin.clone(),
            cfg.image.clone(),
            tenant.clone(),
        );
        let driver = tokio::task::spawn_blocking(move || {
            open(&bulkhead_driver::HostEnv {
                state_root: &sr,
                tenant: &tn,
                tenant_dir: &td,
                agent_bin: &ab,
                image: &image,
                uid_base,
                uid_count: bulkhead_core::UID_COUNT,
            })
        })
        .await
        .map_err(|e| StartError::Refused(format!("opening the {name} driver panicked: {e}")))?
        .map_err(|source| StartError::Driver {
            name: name.to_string(),
            source,
        })?;
        tracing::info!(tenant = %tenant, driver = name, accel = ?driver.info().accel, "driver ready");
        opened_drivers.push(driver);
    }
    let driver = opened_drivers.remove(0);
    let store = {
        let (db, t) = (tenant_dir.join("state.db"), tenant.clone());
        tokio::task::spawn_blocking(move || bulkhead_store::Store::open(&db, &t))
            .await
            .map_err(|e| StartError::Refused(format!("opening the state database: {e}")))??
    };
    // keys (#13): the tenant's data key, created and wrapped on the tenant's first start.
    let key = {
        let (kr, t) = (host.keyring.clone(), tenant.clone());
        tokio::task::spawn_blocking(move || kr.tenant(&t))
            .await
            .map_err(|e| StartError::Refused(format!("opening the tenant key: {e}")))?
            .map_err(|e| StartError::Refused(format!("tenant {tenant:?}'s data key: {e}")))?
    };
    // audit (#14, A): the tenant's trail; before reconciliation, whose changes it records.
    let audit = crate::audit::Audit::open(&tenant_dir, &tenant, &key, &cfg.audit)
        .map_err(|e| StartError::Refused(format!("tenant {tenant:?}: {e}")))?;
    // Before reconciliation, which would sweep the cgroup of a node whose id it did not know.
    let imported = crate::upgrade::import_node_files(&store, &tenant_dir.join("nodes")).await;
    if imported > 0 {
        tracing::info!(
            tenant = %tenant,
            nodes = imported,
            "imported node records from an older release's files"
        );
    }
    let t = Arc::new(Tenant::new(
        host.clone(),
        TenantParts {
            cfg: cfg.clone(),
            dir: tenant_dir.clone(),
            agent_bin,
            uid_base,
            driver,
            other_drivers: opened_drivers,
            store,
            net: net.clone(),
            key,   // keys (#13)
            audit, // #14, A
        },
    ));
    // #14, part B: kept events back (cursors go on), before reconciliation emits any
    t.open_events().await;
    let (adopted, removed) = t.reconcile().await;
    t.reconcile_volumes().await; // volumes (#13): half-made volumes and snapshots wiped
    t.sweep_commits().await; // commit and fork (#13): half-made commits wiped
    if let Some(n) = &net {
        let live = t.live_node_nets();
        let n2 = n.clone();
        let stale = tokio::task::spawn_blocking(move || n2.start(&live))
            .await
            .map_err(|e| StartError::Refused(format!("network setup panicked: {e}")))??;
        for l in stale {
            tracing::warn!(link = %l, "removed a link that no live node explains");
        }
        tracing::info!(tenant = %tenant, groups = n.groups.len(), table = %bulkhead_net::names::Tag::table(&tenant), "network rules in place");
    }
    t.reopen_forwards().await;
    // Standby sockets left by a daemon that died: their standbys are gone (stdin closed).
    let _ = std::fs::remove_dir_all(t.pool.dir());
    ensure_dir(t.pool.dir(), 0o700).map_err(io("creating the standby directory"))?;
    t.pool.refill();
    t.relaunch_kept(); // #13: persistent nodes that ran when the daemon went
    tracing::info!(tenant = %tenant, adopted, removed, cgroup = host.cgroups.describe(), "state reconciled");
    Ok(Opened {
        app: Arc::new(App {
            host: host.clone(),
            tenant: t,
        }),
        net,
        net_claim,
        _uid: uid,
        _lock: lock,
    })
}

/// What happens to a tenant's nodes at stop (`graceful_shutdown`), then its network.
async fn close_tenant(o: Opened) {
    let t = &o.app.tenant;
    if t.cfg.graceful_shutdown {
        t.pool.drain().await;
        o.app.host.cgroups.remove_tenant_if_empty(&t.name);
        tracing::info!(tenant = %t.name, "graceful_shutdown: true, leaving nodes running for the next start");
    } else {
        t.delete_all().await;
    }
    // With no node left, the tenant's network goes too: tables, bridges, range claim.
    if let (Some(n), Some(claim)) = (&o.net, &o.net_claim) {
        if t.list().is_empty() {
            let (n, td) = (n.clone(), t.dir.clone());
            let _ = tokio::task::spawn_blocking(move || n.remove_all(&td)).await;
            claim.release_on_drop();
        }
    }
}

/// A start that failed after some tenants were opened: their nodes stay (as a stop with
/// `graceful_shutdown: true` would leave them, for the next start to re-adopt), their
/// standbys go.
async fn abandon(opened: Vec<Opened>) {
    let host = opened.first().map(|o| o.app.host.clone());
    let left = own_nodes(&opened); // noisy neighbours (#12)
    for o in opened {
        o.app.tenant.pool.drain().await;
        o.app
            .host
            .cgroups
            .remove_tenant_if_empty(&o.app.tenant.name);
    }
    if let Some(h) = host {
        // noisy neighbours (#12): claims of groups with a node left stay (as at a stop), the
        // others go; leave _daemon.
        h.cores
            .release(|t, g| left.iter().any(|n| n.tenant == t && n.group == g));
    }
}

/// noisy neighbours (#12): the nodes the opened tenants hold now (their cpusets follow their
/// group's cores; a group with one keeps its claim at stop).
fn own_nodes(opened: &[Opened]) -> Vec<crate::cores::OwnNode> {
    opened
        .iter()
        .flat_map(|o| {
            let t = &o.app.tenant;
            t.list()
                .rows()
                .iter()
                .map(|r| crate::cores::OwnNode {
                    tenant: t.name.clone(),
                    group: r.hostgroup.clone(),
                    cgroup: r.cgroup.clone().unwrap_or_default(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs the daemon until SIGTERM or SIGINT. `config_path` is only reported: it tells a
/// refused second daemon of a tenant which config the running one was started with.
pub async fn run(
    cfg: DaemonConfig,
    state_root: PathBuf,
    config_path: &Path,
    drivers: Arc<bulkhead_driver::Registry>,
) -> Result<(), StartError> {
    // Take SIGTERM/SIGINT before anything else, so a stop during startup is handled (and
    // waits for startup to finish) instead of killing the daemon halfway.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("installing the SIGTERM handler"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(io("installing the SIGINT handler"))?;
    // Nodes can never get more than the host has, nor anything their driver cannot give:
    // refuse such a config (or a driver this build lacks) before anything else.
    let facts = host_facts(&state_root);
    let mut entries = Vec::new();
    for t in &cfg.tenants {
        let e = drivers.check(t, &facts).map_err(|e| {
            StartError::Refused(if cfg.shared {
                format!("tenant {:?}: {e}", t.tenant)
            } else {
                e.to_string()
            })
        })?;
        entries.push(e.into_iter().copied().collect::<Vec<_>>());
    }
    let holder = tenant_lock::Holder {
        pid: std::process::id(),
        state_dir: state_root.clone(),
        config: std::path::absolute(config_path).unwrap_or_else(|_| config_path.into()),
        api: cfg.api.endpoint(),
    };
    ensure_dir(&state_root, 0o711).map_err(io(format!("creating {}", state_root.display())))?;
    let dir = daemon_dir(&cfg, &state_root, &holder)?;
    host_limits::ensure_file_max();
    host_limits::raise_nofile(host_limits::fds_needed(
        cfg.conns.max_connections,
        forward::MAX_TENANT_CONNECTIONS * cfg.tenants.len(),
    ));
    for p in listen::sockets(&cfg) {
        listen::check_socket(&p)?;
    }
    let self_exe = std::env::current_exe().map_err(io("locating our own executable"))?;
    // workload identity (#11, ADR 0020): one issuer for the daemon, keys in its own directory.
    let identity = match &cfg.workload_identity {
        Some(w) => Some(Arc::new(
            crate::identity::Identity::open(w.clone(), &dir.path)
                .map_err(|e| StartError::Refused(e.to_string()))?,
        )),
        None => None,
    };
    // keys (#13): the host keyring, before any tenant (each unwraps its data key from it).
    let keyring = crate::keys::open_keyring(cfg.storage.keys_dir(&state_root)).await?;
    let protection = crate::keys::probe_protection(keyring.dir().to_path_buf()).await;
    // #14, part B: the daemon's binaries and config, hashed before anything else runs
    let hashing = crate::events::integrity::Integrity::start(&self_exe, config_path);
    let cgroups = bulkhead_sandbox::Cgroups::detect()?;
    // noisy neighbours (#12, ADR 0027): refuse what the core pool cannot give, then move into
    // bulkhead/_daemon before any supervisor starts (they are born there).
    let cores = crate::cores::Cores::new(&cfg, &cgroups)?;
    cores.enter()?;
    // end noisy neighbours
    let host = Arc::new(HostServices {
        identity: identity.clone(),
        cores, // noisy neighbours (#12)
        cgroups,
        drivers,
        supervisor_bin: companion(&self_exe, "bulkhead-supervisor")?,
        conn_stats: Default::default(),
        started: Instant::now(),
        // fair host-work queues (#12, rate)
        fair: crate::fair::Fair::new(crate::fair::HOST_WORK_SLOTS, crate::fair::MAX_QUEUED_TOTAL),
        keyring, // keys (#13)
        protection,
        integrity: Default::default(), // #14, part B: set once hashed (below)
    });
    // audit (#14, A): a shared daemon's own trail (failed authentication and the like).
    let own_audit =
        crate::audit::open_daemon_trail(cfg.shared, &dir.path, &host.keyring, &cfg.audit)
            .map_err(StartError::Refused)?;
    // The TLS files are read before any tenant is touched: a bad one stops the start early.
    let tls = listen::tls_acceptor(&cfg)?;
    let mut opened = Vec::new();
    for (t, e) in cfg.tenants.iter().zip(&entries) {
        match open_tenant(t, e, &host, &state_root, &holder).await {
            Ok(o) => opened.push(o),
            Err(e) => {
                abandon(opened).await;
                return Err(e);
            }
        }
    }
    // noisy neighbours (#12): claim the dedicated cores once every tenant is held.
    if let Err(e) = host.cores.claim(&cfg, &own_nodes(&opened)) {
        abandon(opened).await;
        return Err(e);
    }
    let roles = Arc::new(cfg.roles.clone());
    // tokens (#11, ADR 0022): API tokens in the daemon's directory (after the tenants: a
    // one-tenant daemon's directory is its tenant's, claimed by open_tenant).
    let tokens = match open_tokens(&dir.path, roles.clone()).await {
        Ok(t) => t,
        Err(e) => {
            abandon(opened).await;
            return Err(e);
        }
    };
    // end tokens
    let daemon = Arc::new(Daemon {
        audit: own_audit, // #14, A
        host: host.clone(),
        tenants: opened.iter().map(|o| o.app.clone()).collect(),
        shared: cfg.shared,
        roles,
        unauthenticated: Default::default(),
        dir: dir.path.clone(),
        tokens, // tokens (#11)
    });
    if let Err(m) = daemon.check_node_names() {
        drop(daemon);
        abandon(opened).await;
        return Err(StartError::Refused(m));
    }
    // seccomp violations (#14, C): one kernel log reader per process, over these tenants.
    crate::seccomp_watch::start(daemon.tenants.iter().map(|a| a.tenant.clone()));
    // #14, part B: the digests at start, hashed while the tenants opened
    host.integrity.set(hashing.await.unwrap_or_default());
    let listeners = match listen::bind(&cfg, &daemon, tls).await {
        Ok(l) => l,
        Err(e) => {
            drop(daemon);
            abandon(opened).await;
            return Err(e);
        }
    };
    for o in &opened {
        if let Some(id) = &identity {
            o.app.tenant.start_identity(id.clone()); // workload identity (#11)
        }
        create_initial(&o.app.tenant).await;
        crate::flows::start(&o.app.tenant); // unexpected flows (#14, D)
        o.app.tenant.start_usage(); // #14 usage: the sampler
        o.app.tenant.start_expiry(); // #15, B: node TTL, the sweeper
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    crate::events::integrity_watch::watch(&daemon, stop_rx.clone()); // #14, part B
    let serving = listen::serve_all(listeners, &cfg, &daemon, stop_rx);
    eprintln!(
        "bulkhead: {} ready on {}",
        match daemon.names().as_slice() {
            [one] => format!("tenant {one}"),
            many => format!("tenants {}", many.join(", ")),
        },
        listen::describe(&cfg)
    );
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for o in &opened {
        o.app.tenant.events.close().await; // #14, part B: live event streams end
    }
    for s in serving {
        let _ = s.await;
    }
    daemon.audit.as_ref().inspect(|a| a.close()); // #14, A: the own trail's last checkpoint
    drop(daemon);
    let mut left: Vec<(String, String)> = Vec::new(); // noisy neighbours (#12)
    for o in opened {
        let t = o.app.tenant.clone();
        t.usage_round(None).await; // #14 usage: a last round for nodes that outlive the daemon
        close_tenant(o).await;
        t.events.close().await; // #14, part B: events of the stop (deletes) on disk
        t.audit.close(); // #14, A: the last checkpoint, after the last change at stop
        left.extend(
            t.list()
                .rows()
                .iter()
                .map(|r| (t.name.clone(), r.hostgroup.clone())),
        );
    }
    // noisy neighbours (#12): cores of groups with no node left go back; leave _daemon.
    host.cores
        .release(|t, g| left.iter().any(|(lt, lg)| lt == t && lg == g));
    Ok(())
}

/// tokens (#11, ADR 0022): the daemon's API tokens, `<daemon dir>/auth.db`.
async fn open_tokens(
    dir: &Path,
    roles: Arc<crate::auth::Roles>,
) -> Result<Arc<crate::auth::token_admin::TokenService>, StartError> {
    let db = dir.join("auth.db");
    let store = tokio::task::spawn_blocking(move || bulkhead_store::TokenStore::open(&db))
        .await
        .map_err(|e| StartError::Refused(format!("opening the auth database: {e}")))?
        .map_err(|e| StartError::Refused(e.to_string()))?;
    Ok(Arc::new(crate::auth::token_admin::TokenService {
        store,
        roles,
    }))
}

/// Creates the `count` nodes of each host group that are missing.
async fn create_initial(app: &Arc<Tenant>) {
    let nodes = app.list();
    for g in &app.cfg.groups {
        let have = nodes.group(&g.name).len() as u32;
        for _ in have..g.count {
            match app
                .create(
                    &g.name,
                    Default::default(),
                    crate::tenant::Wait::Agent,
                    std::time::Duration::from_secs(60),
                )
                .await
            {
                Ok(n) => tracing::info!(node = %n.node.hostname, "created at start (count)"),
                Err(e) => {
                    tracing::error!(group = %g.name, error = %e, "could not create node at start")
                }
            }
        }
    }
}
