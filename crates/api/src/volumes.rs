//! Wire types of volumes and their snapshots (issue #13): `POST /volumes`, `GET /volumes`,
//! `GET /volumes/{id}`, `/volumes/{id}/snapshots`, and a node create's `volumes` entries.
//! Requests refuse unknown keys: a typo never silently changes what a node mounts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::types::VolumeAttach;

/// A size as a number of bytes or as people write it (`"1G"`, `"512M"`: powers of 1024, like
/// a host group's `storage_size`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// Body of `POST /volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeRequest {
    pub name: String,
    /// Required, unless `from_snapshot` is given (then the snapshot's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How many files and directories the volume may hold (default: one per 16 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// A snapshot of one of the tenant's volumes: the new volume starts with its content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
}

/// A node holding a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeHolder {
    pub node: String,
    pub path: String,
    pub read_only: bool,
}

/// A volume, as `POST /volumes` and `GET /volumes/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// A ULID: immutable, never reused.
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub size_bytes: u64,
    pub inodes: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `ready`; `creating` or `deleting` while the daemon makes or wipes it.
    pub state: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// The nodes holding it.
    #[serde(default)]
    pub attachments: Vec<VolumeHolder>,
}

/// A snapshot of a volume (`POST /volumes/{id}/snapshots`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    pub id: String,
    /// The volume it was taken of.
    pub volume: String,
    /// The volume's size in bytes (a volume made from it has this size).
    pub size: u64,
    pub created_at: String,
}

/// `?tenant=NAME`, when given.
fn tenant_query(tenant: Option<&str>) -> String {
    tenant.map_or_else(String::new, |t| {
        format!("?tenant={}", crate::client::enc(t))
    })
}

impl crate::Client {
    /// `POST /volumes` (201 with the volume once it is ready).
    pub async fn create_volume(
        &self,
        req: &CreateVolumeRequest,
        tenant: Option<&str>,
    ) -> Result<Volume, crate::ClientError> {
        let body = serde_json::to_value(req).expect("a volume request is JSON");
        let path = format!("/volumes{}", tenant_query(tenant));
        self.json(hyper::Method::POST, &path, Some(&body)).await
    }

    /// `GET /volumes`: the volumes of every tenant the caller may see (or of `tenant`).
    pub async fn list_volumes(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<Volume>, crate::ClientError> {
        self.get(&format!("/volumes{}", tenant_query(tenant))).await
    }

    /// `GET /volumes/{id}`.
    pub async fn volume(&self, id: &str) -> Result<Volume, crate::ClientError> {
        self.get(&format!("/volumes/{}", crate::client::enc(id)))
            .await
    }

    /// `DELETE /volumes/{id}` (204 once wiped).
    pub async fn delete_volume(&self, id: &str) -> Result<(), crate::ClientError> {
        self.send_ok(
            hyper::Method::DELETE,
            &format!("/volumes/{}", crate::client::enc(id)),
            crate::client::full_body(bytes::Bytes::new()),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /volumes/{id}/snapshots` (201).
    pub async fn snapshot_volume(&self, id: &str) -> Result<VolumeSnapshot, crate::ClientError> {
        self.json(
            hyper::Method::POST,
            &format!("/volumes/{}/snapshots", crate::client::enc(id)),
            None,
        )
        .await
    }

    /// `GET /volumes/{id}/snapshots`.
    pub async fn volume_snapshots(
        &self,
        id: &str,
    ) -> Result<Vec<VolumeSnapshot>, crate::ClientError> {
        self.get(&format!("/volumes/{}/snapshots", crate::client::enc(id)))
            .await
    }

    /// `DELETE /volumes/{id}/snapshots/{sid}` (204 once wiped).
    pub async fn delete_snapshot(&self, id: &str, sid: &str) -> Result<(), crate::ClientError> {
        self.send_ok(
            hyper::Method::DELETE,
            &format!(
                "/volumes/{}/snapshots/{}",
                crate::client::enc(id),
                crate::client::enc(sid)
            ),
            crate::client::full_body(bytes::Bytes::new()),
            None,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_numbers_or_text_and_unknown_keys_are_refused() {
        let r: CreateVolumeRequest =
            serde_json::from_str(r#"{"name":"a","size":"1G","labels":{"k":"v"}}"#).unwrap();
        assert_eq!(r.size, Some(Size::Text("1G".into())));
        let r: CreateVolumeRequest = serde_json::from_str(r#"{"name":"a","size":4096}"#).unwrap();
        assert_eq!(r.size, Some(Size::Bytes(4096)));
        assert!(serde_json::from_str::<CreateVolumeRequest>(r#"{"name":"a","sise":1}"#).is_err());
        assert!(
            serde_json::from_str::<VolumeAttach>(r#"{"id":"x","path":"/d","exec":true}"#).is_err()
        );
        let a: VolumeAttach = serde_json::from_str(r#"{"id":"x","path":"/d"}"#).unwrap();
        assert!(!a.read_only);
    }
}
