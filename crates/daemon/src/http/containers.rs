//! Containers in a node (#16, B2): `PUT /vm/{node}/containers/{cid}/rootfs` (a tar body,
//! unpacked by the node's agent as root of the node into the container's root with the tar's
//! numeric owners and modes), `POST /vm/{node}/containers` (makes its mounts: 201
//! `ContainerInfo`), `GET /vm/{node}/containers`, `DELETE /vm/{node}/containers/{cid}`. The
//! registry and the work are `tenant/containers.rs`; this file parses and streams.

use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_agent::client::CopyInRequest;
use bulkhead_api::containers::{rootfs_dir, ContainerInfo, CreateContainerRequest};
use bulkhead_core::{Code, DomainError};
use futures_util::StreamExt;

use super::body::{json_body, Scoped};
use super::query::Query;
use crate::error::ApiError;

/// `PUT /vm/{node}/containers/{cid}/rootfs`: answers 201 with the bytes the agent wrote.
pub async fn put_rootfs(
    Scoped(app): Scoped,
    Path((node, cid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.running_node(&node)?;
    app.tenant.check_rootfs_upload(&n, &cid).await?;
    let _turn = app.tenant.agent_turn(&n).await?;
    let path = rootfs_dir(&cid);
    let req = CopyInRequest {
        path: path.clone(),
        tar: true,
        no_setid: app.tenant.admission.no_setid(),
        owners: true,
        ..Default::default()
    };
    let mut upload = app.tenant.copy_in(&n, req).await?;
    let mut data = body.into_data_stream();
    let mut sent = 0u64;
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(c) => {
                sent += c.len() as u64;
                if upload.write(&c).await.is_err() {
                    break; // the agent stopped reading: its answer below says why
                }
            }
            Err(e) => {
                drop(upload);
                return Err(DomainError::invalid(format!(
                    "rootfs upload was cut off: {e}; nothing was written"
                ))
                .into());
            }
        }
    }
    if sent == 0 {
        drop(upload); // never finished: the agent writes nothing
        return Err(DomainError::invalid(
            "the body is empty: send the container's rootfs as a tar archive (application/x-tar)",
        )
        .into());
    }
    match upload.finish().await {
        Ok(bytes) => Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": cid, "root": path, "bytes": bytes })),
        )
            .into_response()),
        Err(e) => {
            let mut e = app.tenant.agent_failed(&n, e);
            if e.code == Code::NoSpace {
                let row = n.row();
                if let Ok(g) = app.tenant.group(&row.hostgroup) {
                    let limit = app
                        .tenant
                        .driver_for(&g.name)
                        .storage_limit(g, row.ram_bytes);
                    e.message = format!(
                        "the rootfs of container {cid:?} does not fit: {}; {limit}",
                        e.message
                    );
                }
            }
            Err(e.into())
        }
    }
}

/// `POST /vm/{node}/containers`: 201 and the container once its mounts are made.
pub async fn create(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.running_node(&node)?;
    let req: CreateContainerRequest = json_body(&app, body).await?;
    let info = app.tenant.create_container(&n, req).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `GET /vm/{node}/containers`.
pub async fn list(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<ContainerInfo>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    Ok(Json(app.tenant.list_containers(&n)))
}

/// `DELETE /vm/{node}/containers/{cid}`: 204 once its processes, mounts and tree are gone.
pub async fn delete(
    Scoped(app): Scoped,
    Path((node, cid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.running_node(&node)?;
    app.tenant.delete_container(&n, &cid).await?;
    Ok(StatusCode::NO_CONTENT)
}
