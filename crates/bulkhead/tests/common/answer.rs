//! Raw API calls for the end-to-end suite: status, headers and body of one request, and the
//! checks every route's answer shares (200, or a 4xx with the `{"error","code"}` body).

use bulkhead_api::client::full_body;
use bulkhead_api::Client;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Method, StatusCode};

use super::rt;

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

pub fn call(c: &Client, m: Method, path: &str, body: Vec<u8>, ct: Option<&str>) -> Answer {
    rt().block_on(async {
        let r = c.send(m, path, full_body(body), ct).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        Answer {
            status,
            headers,
            body,
        }
    })
}

pub fn get(c: &Client, path: &str) -> Answer {
    call(c, Method::GET, path, Vec::new(), None)
}

pub fn post(c: &Client, path: &str, body: Vec<u8>) -> Answer {
    call(
        c,
        Method::POST,
        path,
        body,
        Some("application/octet-stream"),
    )
}

pub fn ok(a: &Answer, what: &str) {
    assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.text());
}

/// A 4xx with the `{"error","code"}` body.
pub fn refused(a: &Answer, what: &str) -> String {
    assert!(
        a.status.is_client_error(),
        "{what}: {} {}",
        a.status,
        a.text()
    );
    let v = a.json();
    assert!(v["code"].is_string(), "{what}: {v}");
    v["error"].as_str().unwrap().to_string()
}
