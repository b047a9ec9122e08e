//! The daemon's own routes: health, info and metrics.

use axum::extract::State;
use axum::Extension;

use crate::auth::Principal;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_api::Info;
use std::sync::atomic::Ordering;

use super::body::{AppState, Visible};

/// Liveness: `OK` as text, as Slicer's spec has it.
pub async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "OK\n",
    )
        .into_response()
}

/// The daemon's version and build; `tenant` and `hypervisor` are those of the first tenant the
/// caller may see (a one-tenant daemon's only one), `tenants` all of them.
pub async fn info(
    Visible(tenants): Visible,
    principal: Option<Extension<Principal>>,
) -> Json<Info> {
    let first = &tenants[0];
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: option_env!("BULKHEAD_GIT_COMMIT")
            .unwrap_or("unknown")
            .into(),
        tenant: first.tenant.name.clone(),
        tenants: tenants.iter().map(|a| a.tenant.name.clone()).collect(),
        hypervisor: first.tenant.cfg.hypervisor.clone(),
        cgroup: first.host.cgroups.describe().into(),
        accel: first.tenant.driver.info().accel,
        storage: Some({
            let p = &first.host.protection;
            bulkhead_api::types::StorageProtection {
                fscrypt: p.fscrypt,
                dm_crypt: p.dm_crypt,
                missing: p.missing().to_vec(),
            }
        }),
        // #14, part B: digests of the daemon's files; host paths for a global-admin only
        integrity: Some(
            first
                .host
                .integrity
                .report(principal.is_some_and(|p| p.is_global_admin())),
        ),
    })
}

/// One metric: name, type, help, value.
type Metric = (&'static str, &'static str, &'static str, u64);

/// Prometheus text: each tenant's counters the caller may see (labelled `tenant`), then, for a
/// global-admin, the daemon's own (labelled `listener="api"`).
pub async fn metrics(
    State(daemon): State<AppState>,
    Visible(tenants): Visible,
    Extension(principal): Extension<Principal>,
) -> Response {
    let mut out = String::new();
    let per_tenant: Vec<(String, [Metric; 13])> = tenants
        .iter()
        .map(|app| {
            let c = &app.tenant.counters;
            let nodes = app.tenant.list().len() as u64;
            (app.tenant.name.clone(), [
                (
                    "bulkhead_nodes",
                    "gauge",
                    "Nodes of the tenant in any state.",
                    nodes,
                ),
                        (
                    "bulkhead_node_creates_total",
                    "counter",
                    "Node creates admitted.",
                    c.creates.load(Ordering::Relaxed),
                ),
                        (
                    "bulkhead_node_create_failures_total",
                    "counter",
                    "Node creates that failed and were rolled back.",
                    c.create_failures.load(Ordering::Relaxed),
                ),
                        (
                    "bulkhead_node_deletes_total",
                    "counter",
                    "Nodes deleted.",
                    c.deletes.load(Ordering::Relaxed),
                ),
                        (
                    "bulkhead_execs_total",
                    "counter",
                    "Exec requests started.",
                    c.execs.load(Ordering::Relaxed),
                ),
                        (
                    "bulkhead_not_found_total",
                    "counter",
                    "Requests for nodes that do not exist for this tenant.",
                    c.not_found.load(Ordering::Relaxed),
                ),
                        (
                    "bulkhead_rejected_busy_total",
                    "counter",
                    "Lifecycle requests refused because the queue was full.",
                    c.rejected_busy.load(Ordering::Relaxed),
                ),
                        (
                    "bulkhead_standby_hits_total",
                    "counter",
                    "Node creates served by a standby supervisor (no cgroup move on the create path).",
                    c.standby_hits.load(Ordering::Relaxed),
                ),
                        (
                    "bulkhead_standby_misses_total",
                    "counter",
                    "Node creates that found the standby pool empty.",
                    c.standby_misses.load(Ordering::Relaxed),
                ),
                (
                    "bulkhead_denied_requests_total",
                    "counter",
                    "Requests refused by authorization in the tenant (403, and the 404 of a node the caller has no role for).",
                    c.denied.load(Ordering::Relaxed),
                ),
                // ---- rate limits, fair queues (#12, rate) ----
                (
                    "bulkhead_rate_limited_total",
                    "counter",
                    "Requests refused with 429 rate_limited: the tenant's lifecycle or exec token bucket was empty.",
                    app.tenant.limits.rate_limited.load(Ordering::Relaxed),
                ),
                (
                    "bulkhead_busy_total",
                    "counter",
                    "Requests refused with 503 busy: the tenant's requests in flight, open sessions or queued lifecycle operations at their bound, or no host-work slot before the timeout.",
                    app.tenant.limits.busy.load(Ordering::Relaxed),
                ),
                // ---- end rate limits ----
                (
                    "bulkhead_tenant_up",
                    "gauge",
                    "1 for each tenant the daemon serves.",
                    1,
                ),
            ])
        })
        .collect();
    for k in 0..per_tenant.first().map_or(0, |(_, m)| m.len()) {
        let (name, kind, help, _) = per_tenant[0].1[k];
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (t, m) in &per_tenant {
            out.push_str(&format!("{name}{{tenant=\"{t}\"}} {}\n", m[k].3));
        }
    }
    // ---- volume attach (#13, attach) ----
    if !tenants.is_empty() {
        let rows: Vec<_> = tenants
            .iter()
            .map(|app| app.tenant.attach.metrics(&app.tenant.name))
            .collect();
        for k in 0..rows[0].len() {
            let (name, help, _, _) = &rows[0][k];
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for r in &rows {
                out.push_str(&format!("{name}{{{}}} {}\n", r[k].2, r[k].3));
            }
        }
    }
    // ---- end volume attach ----
    // #14: each part's per-tenant metrics, one block each (each part's module renders them).
    // ---- audit (#14, A) ----
    out.push_str(&crate::audit::metrics(
        tenants
            .iter()
            .map(|a| (a.tenant.name.as_str(), &a.tenant.audit)),
    ));
    // ---- end audit ----
    // ---- events, denial spikes, integrity (#14, B) ----
    out.push_str(&crate::events::metrics::metrics(&tenants));
    // ---- end events ----
    // ---- seccomp violations (#14, C) ----
    out.push_str(&crate::seccomp_watch::metrics(
        tenants.iter().map(|a| &*a.tenant),
        principal.is_global_admin(),
    ));
    // ---- end seccomp ----
    // ---- unexpected flows (#14, D) ----
    // With bulkhead_network_denied_packets_total{tenant,rule}: one nft listing per tenant.
    out.push_str(&crate::flows::metrics(&tenants).await);
    // ---- end flows ----
    // ---- usage (#14, E) ----
    out.push_str(&crate::usage::metrics(
        &tenants
            .iter()
            .map(|a| (a.tenant.name.as_str(), &a.tenant.usage))
            .collect::<Vec<_>>(),
    ));
    // ---- end usage ----
    let cs = &daemon.host.conn_stats;
    let daemon_metrics: [Metric; 6] = [
        (
            "bulkhead_api_connections",
            "gauge",
            "Connections the API listener serves now.",
            cs.open.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_api_connections_rejected_total",
            "counter",
            "Connections refused with 503 because config.api.max_connections were open.",
            cs.rejected.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_api_header_timeouts_total",
            "counter",
            "Connections closed with 408: a request head not completed within config.api.header_timeout.",
            cs.header_timeouts.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_api_idle_closed_total",
            "counter",
            "Connections closed because no request began within config.api.header_timeout.",
            cs.idle_closed.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            daemon.host.started.elapsed().as_secs(),
        ),
        (
            "bulkhead_unauthenticated_requests_total",
            "counter",
            "Requests refused with 401: credentials missing, malformed, expired, revoked or not verifiable.",
            daemon.unauthenticated.load(Ordering::Relaxed),
        ),
    ];
    // The daemon's own counters say something of every tenant's traffic: global-admin only.
    for (name, kind, help, v) in daemon_metrics
        .into_iter()
        .filter(|_| principal.is_global_admin())
    {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{listener=\"api\"}} {v}\n"
        ));
    }
    // ---- volumes (#13, helper B): refused attaches by reason ----
    out.push_str(&crate::tenant::volume_attach::metrics(
        tenants.iter().map(|a| &*a.tenant),
    ));
    // ---- end volumes ----
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
