//! `filesystem.Filesystem` over Connect (routes `/envd/{node}/filesystem.Filesystem/<Method>`):
//! a thin adapter from the Connect codec (`bulkhead_e2b::connect`) to `fs_ops` (unary calls)
//! and `watchers` (`WatchDir`, a server stream, and the polled watcher calls).
//!
//! Every call resolves its user from `Authorization: Basic` (`user.rs`) and its paths by
//! E2B's rule. Errors are Connect's (`not_found` for a missing path, which `files.exists`
//! reads as false; `already_exists` for `MakeDir` of an existing directory; bad input
//! `invalid_argument`); the response also carries the audit layer's reason.

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Code, DomainError};
use bulkhead_e2b::connect::{self, Call, Codec, ConnectError, Msg, Rejection, Shape};
use bulkhead_e2b::filesystem as pb;

use super::user::{self, EnvdUser};
use super::{fs_ops, watchers};
use crate::http::body::{Scoped, TenantApp};
use crate::tenant::{NodeRef, Turn};

/// Connect's code for a domain error.
pub fn connect_error(e: &DomainError) -> ConnectError {
    use connect::Code as C;
    let code = match e.code {
        Code::NotFound | Code::PathNotFound => C::NotFound,
        Code::AlreadyExists => C::AlreadyExists,
        Code::Unauthorized => C::Unauthenticated,
        Code::Forbidden | Code::PermissionDenied | Code::PolicyDenied => C::PermissionDenied,
        Code::QuotaExceeded | Code::RateLimited | Code::NoSpace | Code::TooManyExecs => {
            C::ResourceExhausted
        }
        Code::Unsupported => C::Unimplemented,
        Code::Timeout | Code::AgentTimeout | Code::RequestTimeout => C::DeadlineExceeded,
        Code::NodeNotRunning | Code::NodeNotReady | Code::NodeDeleting => C::FailedPrecondition,
        Code::AgentUnreachable
        | Code::AgentLost
        | Code::AgentUnhealthy
        | Code::Busy
        | Code::AgentBusy
        | Code::NodeBusy => C::Unavailable,
        Code::Internal | Code::AgentError | Code::NodeFailed => C::Internal,
        _ if crate::error::status(e.code) == StatusCode::BAD_REQUEST => C::InvalidArgument,
        _ => C::Unknown,
    };
    ConnectError::new(code, e.message.clone())
}

/// An HTTP response of a Connect reply, with the audit layer's reason when it is an error.
fn respond(r: connect::Reply, reason: Option<&DomainError>) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, r.body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    if let Some(e) = reason {
        resp.extensions_mut().insert(crate::error::Reason {
            code: e.code.as_str(),
            message: e.message.clone(),
        });
    }
    resp
}

/// A refusal before any message was read.
pub fn rejected(r: Rejection) -> Response {
    match r {
        Rejection::UnsupportedMediaType { accept } => {
            let mut resp = StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            resp.headers_mut()
                .insert("accept-post", HeaderValue::from_static(accept));
            resp
        }
        Rejection::Error(e) => respond(e.reply(), None),
    }
}

/// The request's call and its (one) message, read whole up to Connect's message limit.
pub async fn read_call<M: Msg>(
    shape: Shape,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Call, M), Response> {
    let call = Call::from_headers(shape, |n| headers.get(n).and_then(|v| v.to_str().ok()))
        .map_err(rejected)?;
    use http_body_util::BodyExt;
    let bytes = match http_body_util::Limited::new(body, connect::MAX_MESSAGE + 5)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let e = ConnectError::invalid_argument(format!("cannot read the request: {e}"));
            return Err(respond(e.reply(), None));
        }
    };
    let msg = match shape {
        Shape::Unary => connect::decode::<M>(call.codec, &bytes),
        Shape::Stream => {
            let mut r = connect::EnvelopeReader::new();
            r.push(&bytes);
            match r.next_frame() {
                Ok(Some(f)) if !f.is_end() => connect::decode::<M>(call.codec, &f.payload),
                Ok(_) => Err(ConnectError::invalid_argument(
                    "the request stream has no message",
                )),
                Err(e) => Err(e),
            }
        }
    };
    msg.map(|m| (call, m)).map_err(|e| respond(e.reply(), None))
}

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

fn unary_reply<M: Msg>(codec: Codec, r: Result<M, DomainError>) -> Response {
    match r {
        Ok(m) => respond(connect::unary_reply(codec, Ok(m)), None),
        Err(e) => respond(connect_error(&e).reply(), Some(&e)),
    }
}

/// One unary method: parse, prepare, run `$body` with `(app, n, u, req)`, reply.
macro_rules! unary {
    ($name:ident, $req:ty, |$app:ident, $n:ident, $u:ident, $r:ident| $body:expr) => {
        pub async fn $name(
            Scoped($app): Scoped,
            Path(node): Path<String>,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            let (call, $r) = match read_call::<$req>(Shape::Unary, &headers, body).await {
                Ok(x) => x,
                Err(resp) => return resp,
            };
            let r = async {
                let ($n, _turn, $u) = prepare(&$app, &node, &headers).await?;
                $body.await
            }
            .await;
            unary_reply(call.codec, r)
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
        let id = watchers::create(&app, &n, &p, r.recursive).await?;
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
/// passes or the node goes away.
pub async fn watch_dir(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (call, req) = match read_call::<pb::WatchDirRequest>(Shape::Stream, &headers, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let started = async {
        let (n, turn, u) = prepare(&app, &node, &headers).await?;
        let p = user::resolve_path(&req.path, &u)?;
        let w = watchers::open(&app.tenant, &n, &p, req.recursive).await?;
        drop(turn); // a watch holds no turn at the agent for its whole life
        Ok::<_, DomainError>((p, w))
    }
    .await;
    let codec = call.codec;
    let ct = connect::content_type(Shape::Stream, codec);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut reason = None;
    match started {
        Err(e) => {
            let _ = tx.try_send(Ok(connect::end_stream(Some(&connect_error(&e)))));
            reason = Some(e);
        }
        Ok((dir, w)) => {
            let start = pb::WatchDirResponse {
                event: Some(pb::watch_dir_response::Event::Start(
                    pb::watch_dir_response::StartEvent {},
                )),
            };
            let _ = tx.try_send(Ok(connect::message_frame(codec, &start)));
            tokio::spawn(watchers::pump(w, dir, codec, call, tx));
        }
    }
    let mut resp =
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Some(e) = reason {
        resp.extensions_mut().insert(crate::error::Reason {
            code: e.code.as_str(),
            message: e.message,
        });
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_as_connect_codes() {
        use connect::Code as C;
        let c = |code, m: &str| connect_error(&DomainError::new(code, m)).code;
        assert_eq!(c(Code::PathNotFound, "x"), C::NotFound);
        assert_eq!(c(Code::AlreadyExists, "x"), C::AlreadyExists);
        assert_eq!(c(Code::InvalidRequest, "x"), C::InvalidArgument);
        assert_eq!(c(Code::NotADirectory, "x"), C::InvalidArgument);
        assert_eq!(c(Code::PolicyDenied, "x"), C::PermissionDenied);
        assert_eq!(c(Code::NoSpace, "x"), C::ResourceExhausted);
    }
}
