//! The HTTP surface: Slicer-compatible routes plus bulkhead's own. The route table below is
//! the one list of routes: each declares, per method, the [`Action`] it performs, and the
//! router is built from it with the request pipeline's layers (`auth/layer.rs`) around every
//! route. A test checks the table against `docs/api/openapi.yaml`, another that every route
//! passes the authorization layer.
//!
//! Handlers (`nodes.rs`, `exec.rs`, `agent.rs`, `cp.rs`, `fs.rs`, `fs_watch.rs`, `meta.rs`,
//! `stats.rs`, `tokens.rs`, the WebSockets `ws_shell.rs` and `ws_forward.rs`) parse and validate, then call the tenant
//! context; they make no decisions of their own.

// rate limits and in-flight bounds (#12, rate): the step after authorization
mod admit;
pub mod agent;
mod audit; // the audit trail's route (#14, A)
pub mod audit_layer; // the audit trail's layer (#14, A)
pub mod body;
pub mod commits; // #13 commit and fork
mod containers; // #16 B2: containers in a node
pub mod cp;
mod events; // #14 events (part B)
pub mod exec;
pub mod exec_bg;
mod exec_container; // #16 B1: container=<cid>
mod exec_io; // #16 B1: background exec stdin and resize
mod exec_query;
mod exec_wire;
pub mod fs;
mod fs_watch;
mod identity;
pub mod lifecycle;
pub mod list;
pub mod meta;
pub mod nodes;
pub mod query;
mod quota; // quotas (#12)
pub mod scope;
mod secrets; // secrets (#13)
mod shim_placement; // #16 B1
pub mod stats;
pub mod tokens;
mod ttl; // node TTL (#15, B)
mod usage; // usage (#14, part E)
pub mod volumes; // volumes and snapshots (#13, helper B)
pub mod ws_forward;
pub mod ws_shell;

use axum::http::Method;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use bulkhead_core::{Code, DomainError};
use std::sync::Arc;

use crate::auth::layer::{authenticate, authorize, Actions, Pipeline};
use crate::auth::Action;
use crate::error::ApiError;
pub use body::{json_body, AppState, MAX_JSON_BODY};

/// One route: its path, the action of each of its methods, and its handlers.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [(&'static str, Action)],
    pub handler: MethodRouter<AppState>,
}

fn route(
    path: &'static str,
    methods: &'static [(&'static str, Action)],
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        path,
        methods,
        handler,
    }
}

/// Every route: path, methods with their actions, handlers.
pub fn table() -> Vec<Route> {
    use Action::*;
    vec![
        route(
            "/healthz",
            &[("get", ReadHealth), ("head", ReadHealth)],
            get(meta::healthz).head(meta::healthz),
        ),
        route("/info", &[("get", ReadInfo)], get(meta::info)),
        route("/hostgroup", &[("get", ListGroups)], get(nodes::hostgroups)),
        route(
            "/hostgroup/{group}/nodes",
            &[("get", ListNodes), ("post", CreateNode)],
            get(nodes::group_nodes).post(nodes::create_node),
        ),
        route(
            "/hostgroup/{group}/nodes/{node}",
            &[("delete", DeleteNode)],
            delete(nodes::delete_node),
        ),
        route("/nodes", &[("get", ListNodes)], get(nodes::all_nodes)),
        // exec (issue #10, `exec`): foreground and background execs, Slicer's shapes.
        route(
            "/vm/{node}/exec",
            &[("post", ExecInNode), ("get", ReadBgExecs)],
            post(exec::exec).get(exec_bg::list),
        ),
        route(
            "/vm/{node}/exec/{exec_id}",
            &[("get", ReadBgExecs), ("delete", ControlBgExecs)],
            get(exec_bg::info).delete(exec_bg::delete),
        ),
        route(
            "/vm/{node}/exec/{exec_id}/logs",
            &[("get", ReadBgExecs)],
            get(exec_bg::logs),
        ),
        route(
            "/vm/{node}/exec/{exec_id}/wait-exit",
            &[("get", ReadBgExecs)],
            get(exec_bg::wait_exit),
        ),
        route(
            "/vm/{node}/exec/{exec_id}/kill",
            &[("post", ControlBgExecs)],
            post(exec_bg::kill),
        ),
        // #16 B1: input to background execs (the containerd shim's stdin FIFO and ResizePty)
        route(
            "/vm/{node}/exec/{exec_id}/stdin",
            &[("post", WriteBgExecStdin)],
            post(exec_io::stdin),
        ),
        route(
            "/vm/{node}/exec/{exec_id}/resize",
            &[("post", ResizeBgExec)],
            post(exec_io::resize),
        ),
        // end #16 B1
        // #16 B2: containers in a node (the containerd shim's)
        route(
            "/vm/{node}/containers",
            &[("get", ListContainers), ("post", CreateContainer)],
            get(containers::list).post(containers::create),
        ),
        route(
            "/vm/{node}/containers/{cid}",
            &[("delete", DeleteContainer)],
            delete(containers::delete),
        ),
        route(
            "/vm/{node}/containers/{cid}/rootfs",
            &[("put", UploadContainerRootfs)],
            axum::routing::put(containers::put_rootfs),
        ),
        // end #16 B2
        // end of exec's block
        // #16 B1: where a containerd namespace's pods go (served on the shim socket)
        route(
            "/shim/placement",
            &[("get", ShimPlacement)],
            get(shim_placement::placement),
        ),
        // copy-fs (#10): copies in every SDK mode, and the node's file system (ADR 0017).
        route(
            "/vm/{node}/cp",
            &[("get", CopyFromNode), ("post", CopyToNode)],
            get(cp::copy_out).post(cp::copy_in),
        ),
        route(
            "/vm/{node}/fs/readdir",
            &[("get", CopyFromNode)],
            get(fs::readdir),
        ),
        route(
            "/vm/{node}/fs/stat",
            &[("get", CopyFromNode)],
            get(fs::stat),
        ),
        route(
            "/vm/{node}/fs/mkdir",
            &[("post", CopyToNode)],
            post(fs::mkdir),
        ),
        route(
            "/vm/{node}/fs/remove",
            &[("delete", CopyToNode)],
            delete(fs::remove),
        ),
        route(
            "/vm/{node}/fs/watch",
            &[("get", CopyFromNode)],
            get(fs_watch::watch),
        ),
        // end copy-fs
        route(
            "/vm/{node}/logs",
            &[("get", ReadNodeLogs)],
            get(agent::logs),
        ),
        route(
            "/vm/{node}/health",
            &[("get", ReadNodeHealth), ("head", ReadNodeHealth)],
            get(agent::health).head(agent::health),
        ),
        route(
            "/vm/{node}/pause",
            &[("post", PauseNode)],
            post(nodes::pause_node),
        ),
        route(
            "/vm/{node}/resume",
            &[("post", ResumeNode)],
            post(nodes::resume_node),
        ),
        // ---- node TTL (#15, B; ADR 0037): a timeout is a deferred delete ----
        route(
            "/vm/{node}/timeout",
            &[("post", DeleteNode)],
            post(ttl::set_timeout),
        ),
        // ---- end node TTL ----
        route(
            "/vm/{node}/forwards",
            &[("get", ListForwards), ("post", OpenForward)],
            get(nodes::list_forwards).post(nodes::open_forward),
        ),
        route(
            "/vm/{node}/forwards/{port}",
            &[("delete", CloseForward)],
            delete(nodes::close_forward),
        ),
        // shell and forward WebSockets, node stats (issue #10, ws; ADR 0019)
        route(
            "/vm/{node}/shell",
            &[("get", ConnectToNode)],
            get(ws_shell::shell),
        ),
        route(
            "/vm/{node}/forward",
            &[("get", TunnelToNode)],
            get(ws_forward::forward),
        ),
        route("/nodes/stats", &[("get", ReadNodeStats)], get(stats::all)),
        route(
            "/node/{node}/stats",
            &[("get", ReadNodeStats)],
            get(stats::one),
        ),
        route("/metrics", &[("get", ReadMetrics)], get(meta::metrics)),
        // ---- lifecycle: describe, tags, power (ADR 0018) ----
        route(
            "/vm/{node}",
            &[("get", DescribeNode)],
            get(lifecycle::describe),
        ),
        route(
            "/vm/{node}/tags",
            &[("get", ReadNodeTags), ("patch", UpdateNodeTags)],
            get(lifecycle::get_tags).patch(lifecycle::patch_tags),
        ),
        route(
            "/vm/{node}/shutdown",
            &[("post", ShutdownNode)],
            post(lifecycle::shutdown),
        ),
        route(
            "/vm/{node}/relaunch",
            &[("post", RelaunchNode)],
            post(lifecycle::relaunch),
        ),
        route(
            "/vm/{node}/suspend",
            &[("post", SuspendNode)],
            post(lifecycle::suspend),
        ),
        route(
            "/vm/{node}/restore",
            &[("post", RestoreNode)],
            post(lifecycle::restore),
        ),
        // ---- end lifecycle ----
        // ---- API tokens (#11, tokens; ADR 0022): the token's tenant is checked again in
        // the handler (auth/token_admin.rs) ----
        route(
            "/tokens",
            &[("get", ListTokens), ("post", CreateToken)],
            get(tokens::list).post(tokens::create),
        ),
        route(
            "/tokens/{id}",
            &[("delete", RevokeToken)],
            delete(tokens::revoke),
        ),
        // ---- end API tokens ----
        // ---- workload identity (#11, ADR 0020) ----
        route(
            "/.well-known/openid-configuration",
            &[("get", ReadPublicKeys)],
            get(identity::discovery),
        ),
        route(
            "/.well-known/jwks.json",
            &[("get", ReadPublicKeys)],
            get(identity::jwks),
        ),
        route(
            "/identity/rotate",
            &[("post", RotateIdentity)],
            post(identity::rotate),
        ),
        // ---- end workload identity ----
        // ---- quotas (#12, ADR 0025): use against limits, per visible tenant ----
        route("/quota", &[("get", ReadQuota)], get(quota::quota)),
        // ---- end quotas ----
        // ---- secrets (#13): the tenant is the caller's only one, else ?tenant= ----
        route(
            "/secrets",
            &[("get", ListSecrets), ("post", WriteSecret)],
            get(secrets::list).post(secrets::create),
        ),
        route(
            "/secrets/{name}",
            &[("patch", WriteSecret), ("delete", DeleteSecret)],
            axum::routing::patch(secrets::update).delete(secrets::delete),
        ),
        // ---- end secrets ----
        // ---- volumes and snapshots (#13, helper B): no {node}/{group}, the handler picks
        // among the caller's tenants (http/volumes.rs) ----
        route(
            "/volumes",
            &[("get", ListVolumes), ("post", CreateVolume)],
            get(volumes::list).post(volumes::create),
        ),
        route(
            "/volumes/{id}",
            &[("get", ReadVolume), ("delete", DeleteVolume)],
            get(volumes::show).delete(volumes::delete),
        ),
        route(
            "/volumes/{id}/snapshots",
            &[("get", ReadVolume), ("post", SnapshotVolume)],
            get(volumes::snapshots).post(volumes::snapshot),
        ),
        route(
            "/volumes/{id}/snapshots/{sid}",
            &[("delete", DeleteVolume)],
            delete(volumes::delete_snapshot),
        ),
        // ---- end volumes ----
        // ---- commit and fork (#13, helper D2; ADR 0030): `/vm/commits*` name no node or
        // group, so the layer gives the tenants the caller may act in (`http/commits.rs`) ----
        route(
            "/vm/{node}/commit",
            &[("post", CommitNode)],
            post(commits::commit_node),
        ),
        route("/vm/commits", &[("get", ListCommits)], get(commits::list)),
        route(
            "/vm/commits/{id}",
            &[("get", ListCommits), ("delete", DeleteCommit)],
            get(commits::get).delete(commits::delete),
        ),
        route(
            "/vm/commits/{id}/fork",
            &[("post", ForkCommit)],
            post(commits::fork),
        ),
        // ---- end commit and fork ----
        // ---- usage (#14, part E; ADR 0035): per visible tenant, ?tenant= picks one ----
        route("/usage", &[("get", ReadUsage)], get(usage::usage)),
        // ---- end usage ----
        // ---- events (#14, part B; ADR 0032): NDJSON per tenant, ?tenant= picks among several ----
        route("/events", &[("get", ReadEvents)], get(events::events)),
        // ---- end events ----
        // ---- audit trail (#14, A; ADR 0031): the caller's tenants' lines, ?tenant= picks ----
        route("/audit", &[("get", ReadAudit)], get(audit::audit)),
        // ---- end audit trail ----
    ]
}

/// The action of every (path, method) of the table, for the authorization layer.
pub fn actions() -> Actions {
    table()
        .iter()
        .map(|r| (r.path, r.methods.to_vec()))
        .collect()
}

/// The router of the daemon's API behind `chain`: authenticate every request, authorize every
/// routed one, then the handler.
pub fn router(daemon: AppState, chain: crate::auth::authn::Chain) -> Router {
    let pipeline = Arc::new(Pipeline {
        chain,
        tenants: daemon.clone(),
        actions: actions(),
    });
    // #14, A: the audit layer outermost, around authentication
    let audit = Arc::new(audit_layer::AuditState {
        daemon: daemon.clone(),
        actions: actions(),
    });
    with_pipeline(routes(), pipeline)
        .layer(axum::middleware::from_fn_with_state(
            audit,
            audit_layer::audit,
        ))
        .with_state(daemon)
}

fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for route in table() {
        r = r.route(route.path, route.handler);
    }
    r
}

/// Wraps routes in the pipeline's layers: authorization around routed requests only (it
/// needs the matched route), authentication around everything (unknown routes included).
/// (#15, A: the E2B listener's router reuses it.)
pub(crate) fn with_pipeline<S: Clone + Send + Sync + 'static>(
    r: Router<S>,
    pipeline: Arc<Pipeline>,
) -> Router<S> {
    // Route layers run last-added first: authorize, then admit (#12, rate: the tenant's
    // in-flight bound and token buckets).
    r.route_layer(axum::middleware::from_fn_with_state(
        pipeline.clone(),
        admit::admit,
    ))
    .route_layer(axum::middleware::from_fn_with_state(
        pipeline.clone(),
        authorize,
    ))
    .fallback(no_route)
    .method_not_allowed_fallback(bad_method)
    .layer(axum::middleware::from_fn_with_state(pipeline, authenticate))
    .layer(axum::extract::DefaultBodyLimit::disable())
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    DomainError::not_found(format!(
        "no route {method} {}: see docs/api/openapi.yaml",
        uri.path()
    ))
    .into()
}

async fn bad_method(method: Method, uri: axum::http::Uri) -> ApiError {
    DomainError::new(
        Code::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into()
}

#[cfg(test)]
mod tests;
