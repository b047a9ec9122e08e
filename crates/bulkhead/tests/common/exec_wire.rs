//! Exec over the raw API for the exec suites (`e2e_exec_wire.rs`, `e2e_exec_bg.rs`): a
//! request's status and body, NDJSON frames as JSON, and output decoded as Slicer's SDKs do.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bulkhead_api::client::full_body;
use bulkhead_api::Client;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::Value;

/// A request's status and body.
pub fn send(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    m: Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    rt.block_on(async {
        let ct = (m == Method::POST && path.contains("/kill")).then_some("application/json");
        let r = c.send(m, path, full_body(body), ct).await.unwrap();
        let s = r.status().as_u16();
        (
            s,
            r.into_body().collect().await.unwrap().to_bytes().to_vec(),
        )
    })
}

/// NDJSON lines as JSON values.
pub fn ndjson(b: &[u8]) -> Vec<Value> {
    b.split(|x| *x == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

pub fn ok_json<T: serde::de::DeserializeOwned>(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> T {
    rt.block_on(c.json(m, path, body.as_ref()))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Output bytes of a stream's frames of `kind`, decoded as the SDKs do.
pub fn output(frames: &[Value], kind: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for f in frames.iter().filter(|f| f["type"] == kind) {
        let d = f["data"].as_str().unwrap();
        if f["encoding"] == "base64" {
            v.extend(B64.decode(d).unwrap());
        } else {
            v.extend_from_slice(d.as_bytes());
        }
    }
    v
}
