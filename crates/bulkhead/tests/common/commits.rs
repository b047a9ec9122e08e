//! Helpers of the commit end-to-end tests (#13: `e2e_commit.rs`, `e2e_commit_quota.rs`):
//! requests with text answers, a commit made through the API, and what a tenant's commit
//! files, the host's mounts and its loop devices show.
#![allow(dead_code)] // each test file uses part of it

use super::common::*;
use hyper::Method;
use std::path::Path;

/// One request; (status, body).
pub fn call(c: &bulkhead_api::Client, m: Method, path: &str, body: &str) -> (u16, String) {
    rt().block_on(async {
        use http_body_util::BodyExt;
        let ct = (!body.is_empty()).then_some("application/json");
        let r = c
            .send(
                m,
                path,
                bulkhead_api::client::full_body(body.as_bytes().to_vec()),
                ct,
            )
            .await
            .unwrap();
        let s = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (s, String::from_utf8_lossy(&b).into_owned())
    })
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Commits `node`; returns the commit's id.
pub fn commit(c: &bulkhead_api::Client, node: &str) -> String {
    let (st, b) = call(c, Method::POST, &format!("/vm/{node}/commit"), "");
    assert_eq!(st, 201, "{b}");
    json(&b)["id"].as_str().unwrap().to_string()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Names in `dir` (none if it does not exist).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Loop devices whose backing file's path contains `needle`.
pub fn loops_backing(needle: &str) -> Vec<String> {
    names_in(Path::new("/sys/block"))
        .into_iter()
        .filter(|n| n.starts_with("loop"))
        .filter(|n| {
            std::fs::read_to_string(format!("/sys/block/{n}/loop/backing_file"))
                .is_ok_and(|b| b.contains(needle))
        })
        .collect()
}

/// Lines of this process's mount table (the host's namespace) that mention `needle`.
pub fn mounts_naming(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Whether a thread of process `pid` has a mount on `path` in its own mount namespace.
pub fn thread_mounts(pid: i32, path: &str) -> bool {
    names_in(Path::new(&format!("/proc/{pid}/task")))
        .iter()
        .any(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/mountinfo"))
                .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(path)))
        })
}

/// Regular files under `dir` (no symlink followed) that contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            found.extend(files_containing(&e.path(), needle));
        } else if t.is_file() && std::fs::read(e.path()).is_ok_and(|b| contains(&b, needle)) {
            found.push(e.path().display().to_string());
        }
    }
    found
}

/// Commit files and images of the tenant.
pub fn commit_files(tenant_dir: &Path) -> Vec<String> {
    names_in(&tenant_dir.join("commits"))
        .into_iter()
        .chain(
            names_in(&tenant_dir.join("images"))
                .into_iter()
                .filter(|n| n.contains("commit-")),
        )
        .collect()
}
