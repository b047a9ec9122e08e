//! Helpers of the volume end-to-end tests (#13: `e2e_volumes.rs`, `e2e_volume_snapshots.rs`):
//! requests with JSON answers, and a volume's `data` opened from the test (root) with the
//! tenant's key, as a supervisor opens it.
#![allow(dead_code)] // each test file uses part of it

use super::rt;
use hyper::Method;
use serde_json::Value;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub async fn call(
    c: &bulkhead_api::Client,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use http_body_util::BodyExt;
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/json");
    let r = c
        .send(
            m,
            path,
            bulkhead_api::client::full_body(bytes.into_bytes()),
            ct,
        )
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into()));
    (s, v)
}

pub fn req(c: &bulkhead_api::Client, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    rt().block_on(call(c, m, path, body))
}

pub fn create(c: &bulkhead_api::Client, body: Value) -> Value {
    let (s, v) = req(c, Method::POST, "/volumes", Some(body.clone()));
    assert_eq!(s, 201, "create {body}: {v}");
    v
}

pub fn delete(c: &bulkhead_api::Client, id: &str) {
    let (s, v) = req(c, Method::DELETE, &format!("/volumes/{id}"), None);
    assert_eq!(s, 204, "delete {id}: {v}");
}

/// Asserts an error answer: status, code, and a message containing `want`.
pub fn refused(got: (u16, Value), status: u16, code: &str, want: &str) {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(want), "{msg:?} lacks {want:?}");
}

/// The fscrypt key of a volume, as the daemon derives it (the test runs as root).
pub fn volume_key(state: &Path, tenant: &str, key_id: &str) -> bulkhead_storage::Secret<64> {
    bulkhead_storage::Keyring::open(&state.join("keys"))
        .unwrap()
        .tenant(tenant)
        .unwrap()
        .derive("volume", key_id)
}

pub fn image(tenant_dir: &Path, id: &str) -> PathBuf {
    tenant_dir.join("volumes").join(format!("{id}.img"))
}

/// The volume's `data` directory as a detached mount; the path to reach it through /proc.
pub struct Data(pub std::os::fd::OwnedFd);
impl Data {
    pub fn open(state: &Path, tenant: &str, tenant_dir: &Path, v: &Value) -> Data {
        // A volume made from a snapshot keeps the snapshot's key id: its origin volume's id.
        let id = v["id"].as_str().unwrap();
        let key_id = v.get("key_id").and_then(|k| k.as_str()).unwrap_or(id);
        let key = volume_key(state, tenant, key_id);
        Data(bulkhead_storage::ext4img::open_data(&image(tenant_dir, id), &key, false).unwrap())
    }
    pub fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.0.as_raw_fd()))
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
