//! `filesystem.Filesystem` over Connect (routes `/envd/{node}/filesystem.Filesystem/<Method>`):
//! a thin adapter from the Connect calls over axum (`super::connect`, C's) to `fs_ops` (unary
//! calls) and `watchers` (`WatchDir`, a server stream, and the polled watcher calls).
//!
//! Every call resolves its user from `Authorization: Basic` (`user.rs`) and its paths by
//! E2B's rule. Errors are Connect's (`not_found` for a missing path, which `files.exists`
//! reads as false; `already_exists` for `MakeDir` of an existing directory; bad input
//! `invalid_argument`), mapped in one place (`connect::from_domain`).

use axum::body::Body;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use bulkhead_core::DomainError;
use bulkhead_e2b::filesystem as pb;

use super::connect::{self as cx, from_domain, ServerStream};
use super::user::{self, EnvdUser};
use super::{fs_ops, watchers};
use crate::http::body::{Scoped, TenantApp};
use crate::tenant::{NodeRef, Turn};

/// The node (running), a turn at its agent and the call's user.
async fn prepare(
    app: &TenantApp,
    node: &str,
    headers: &HeaderMap,
) -> Result<(NodeRef, Turn, EnvdUser), DomainError> {
    let n = app.tenant.running_node(node)?;
    let turn = app.tenant.agent_turn(&n).await?;
    let name = user::from_authorization(headers)?;
    let u = user::resolve(&app.tenant, &n, name.as_deref()).await?;
    Ok((n, turn, u))
}

/// One unary method over `connect::unary`: prepare, run `$body` with `(app, n, u, req)`.
macro_rules! unary {
    ($name:ident, $req:ty, |$app:ident, $n:ident, $u:ident, $r:ident| $body:expr) => {
        pub async fn $name(
            Scoped($app): Scoped,
            Path(node): Path<String>,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            let (app_ref, node_ref, headers_ref) = (&$app, &node, &headers);
            cx::unary(&$app, &headers, body, move |$r: $req| async move {
                let $app = app_ref;
                let r = async {
                    let ($n, _turn, $u) = prepare($app, node_ref, headers_ref).await?;
                    $body.await
                }
                .await;
                r.map_err(from_domain)
            })
            .await
        }
    };
}

unary!(stat, pb::StatRequest, |app, n, u, r| async {
    let p = user::resolve_path(&r.path, &u)?;
    let entry = fs_ops::stat(&app.tenant, &n, &p).await?;
    Ok(pb::StatResponse { entry: Some(entry) })
});

unary!(make_dir, pb::MakeDirRequest, |app, n, u, r| async {
    let p = user::resolve_path(&r.path, &u)?;
    app.tenant.admission.write(Some(u.uid), Some(u.gid), None)?;
    let entry = fs_ops::make_dir(&app.tenant, &n, &u, &p).await?;
    Ok(pb::MakeDirResponse { entry: Some(entry) })
});

unary!(move_entry, pb::MoveRequest, |app, n, u, r| async {
    let from = user::resolve_path(&r.source, &u)?;
    let to = user::resolve_path(&r.destination, &u)?;
    let entry = fs_ops::rename(&app.tenant, &n, &u, &from, &to).await?;
    Ok(pb::MoveResponse { entry: Some(entry) })
});

unary!(list_dir, pb::ListDirRequest, |app, n, u, r| async {
    let p = user::resolve_path(&r.path, &u)?;
    let entries = fs_ops::list(&app.tenant, &n, &p, r.depth).await?;
    Ok(pb::ListDirResponse { entries })
});

unary!(remove, pb::RemoveRequest, |app, n, u, r| async {
    let p = user::resolve_path(&r.path, &u)?;
    fs_ops::remove(&app.tenant, &n, &p).await?;
    Ok(pb::RemoveResponse {})
});

unary!(
    create_watcher,
    pb::CreateWatcherRequest,
    |app, n, u, r| async {
        let p = user::resolve_path(&r.path, &u)?;
        let id = watchers::create(app, &n, &p, r.recursive).await?;
        Ok(pb::CreateWatcherResponse { watcher_id: id })
    }
);

unary!(
    get_watcher_events,
    pb::GetWatcherEventsRequest,
    |app, n, _u, r| async {
        let events = watchers::take(&app.tenant.name, &n, &r.watcher_id)?;
        Ok(pb::GetWatcherEventsResponse { events })
    }
);

unary!(
    remove_watcher,
    pb::RemoveWatcherRequest,
    |app, n, _u, r| async {
        watchers::remove(&app.tenant.name, &n, &r.watcher_id)?;
        Ok(pb::RemoveWatcherResponse {})
    }
);

/// `WatchDir`: a server stream of a start event, then the directory's changes (and keepalive
/// events at the interval the client asks for) until the client goes, the call's deadline
/// passes or the node goes away. It holds no turn at the agent while it lasts.
pub async fn watch_dir(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (call, req) = match cx::stream_request::<pb::WatchDirRequest>(&app, &headers, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let started = async {
        let (n, _turn, u) = prepare(&app, &node, &headers).await?;
        let p = user::resolve_path(&req.path, &u)?;
        let w = watchers::open(&app.tenant, &n, &p, req.recursive).await?;
        Ok::<_, DomainError>((p, w))
    }
    .await;
    let (dir, w) = match started {
        Ok(x) => x,
        Err(e) => return cx::failed_stream(call, from_domain(e)),
    };
    let (out, resp) = ServerStream::open(call);
    tokio::spawn(watchers::pump(w, dir, out));
    resp
}
