//! E2B's users inside a sandbox: `root` (uid 0) and `user` (uid 1000, gid 1000, home
//! `/home/user`), the only two E2B's SDKs and templates know. A request names one by its
//! `username` query parameter (REST `/files`) or an `Authorization: Basic base64(<name>:)`
//! header (Connect calls, [`from_authorization`]). Not named: `user` when the node's image has
//! a `/home/user` directory, else `root` (the server's default of envd ≥ 0.4.0); the daemon
//! asks the node's agent once and keeps the answer per node record ([`default_user`]), so a
//! new node of the same name asks again. Any other name is a 400 / Connect
//! `invalid_argument` naming the two.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use bulkhead_core::{Code, DomainError};

use crate::tenant::{NodeRef, Tenant};

/// One of E2B's two users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvdUser {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    /// Where relative paths and `~` resolve.
    pub home: &'static str,
}

pub const ROOT: EnvdUser = EnvdUser {
    name: "root",
    uid: 0,
    gid: 0,
    home: "/root",
};

pub const USER: EnvdUser = EnvdUser {
    name: "user",
    uid: 1000,
    gid: 1000,
    home: "/home/user",
};

/// A named user: `root` or `user`; anything else is refused.
pub fn named(name: &str) -> Result<EnvdUser, DomainError> {
    match name {
        "root" => Ok(ROOT),
        "user" => Ok(USER),
        other => Err(DomainError::invalid(format!(
            "user {other:?} is not known in this sandbox: use \"root\" or \"user\" (or name none for the default)"
        ))),
    }
}

/// The user an `Authorization: Basic base64(<name>:)` header names (what the SDKs send on
/// Connect calls), `None` when there is no such header. A header that is not Basic (e.g. a
/// bearer credential meant for the daemon) names nobody.
pub fn from_authorization(h: &axum::http::HeaderMap) -> Result<Option<String>, DomainError> {
    let Some(v) = h.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| DomainError::invalid("the Authorization header is not ASCII"))?;
    let Some((scheme, rest)) = v.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| {
            DomainError::invalid("the Authorization header must be Basic base64(<user>:)")
        })?;
    let s = String::from_utf8(raw)
        .map_err(|_| DomainError::invalid("the Authorization header's user is not UTF-8"))?;
    let name = s.split_once(':').map(|(u, _)| u).unwrap_or(&s);
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// Which image has `/home/user`, by node record id (bounded: forgotten wholesale when full).
fn cache() -> &'static Mutex<HashMap<String, bool>> {
    static C: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    C.get_or_init(Default::default)
}
const CACHE_MAX: usize = 16_384;

/// The user a request means: the one it names, else the node's default ([`default_user`]).
/// `name` empty counts as not named.
pub async fn resolve(
    tenant: &Tenant,
    node: &NodeRef,
    name: Option<&str>,
) -> Result<EnvdUser, DomainError> {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => named(n),
        None => default_user(tenant, node).await,
    }
}

/// `user` when the node's image has a `/home/user` directory, else `root`. Asks the node's
/// agent once per node record (the caller may hold a turn at the agent; this uses one more
/// short connection).
pub async fn default_user(tenant: &Tenant, node: &NodeRef) -> Result<EnvdUser, DomainError> {
    let key = node.row().id.to_string();
    if let Some(has) = cache().lock().ok().and_then(|c| c.get(&key).copied()) {
        return Ok(if has { USER } else { ROOT });
    }
    let has = match tenant.fs_stat(node, USER.home).await {
        Ok(i) => i.kind == "directory",
        Err(e) if matches!(e.code, Code::PathNotFound | Code::NotADirectory) => false,
        Err(e) => return Err(e),
    };
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, has);
    }
    Ok(if has { USER } else { ROOT })
}

/// E2B's path rule: `~` and `~/x` are the user's home; a relative path is relative to it; an
/// absolute one stays. `.` and `..` are resolved lexically (never above `/`); the result is
/// absolute and clean. `~name` (another user's home) is refused.
pub fn resolve_path(path: &str, user: &EnvdUser) -> Result<String, DomainError> {
    let joined = if path == "~" {
        user.home.to_string()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{}/{rest}", user.home)
    } else if path.starts_with('~') {
        return Err(DomainError::invalid(format!(
            "path {path:?}: only ~ (the user's own home) can be expanded"
        )));
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", user.home)
    };
    if joined.contains('\0') {
        return Err(DomainError::invalid("a path must not contain NUL bytes"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let out = format!("/{}", parts.join("/"));
    bulkhead_api::names::validate_node_path(&out).map_err(DomainError::invalid)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn names_and_headers() {
        assert_eq!(named("root").unwrap(), ROOT);
        assert_eq!(named("user").unwrap().uid, 1000);
        let e = named("admin").unwrap_err();
        assert_eq!(e.code, Code::InvalidRequest);
        assert!(e.message.contains("\"root\" or \"user\""), "{}", e.message);

        let mut h = HeaderMap::new();
        assert_eq!(from_authorization(&h).unwrap(), None);
        // base64("user:")
        h.insert("authorization", HeaderValue::from_static("Basic dXNlcjo="));
        assert_eq!(from_authorization(&h).unwrap().as_deref(), Some("user"));
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(from_authorization(&h).unwrap(), None);
        h.insert("authorization", HeaderValue::from_static("Basic !!!"));
        assert!(from_authorization(&h).is_err());
    }

    #[test]
    fn paths_resolve_as_e2b_does() {
        let u = USER;
        assert_eq!(resolve_path("a.txt", &u).unwrap(), "/home/user/a.txt");
        assert_eq!(resolve_path("~", &u).unwrap(), "/home/user");
        assert_eq!(resolve_path("~/d/x", &u).unwrap(), "/home/user/d/x");
        assert_eq!(resolve_path("", &u).unwrap(), "/home/user");
        assert_eq!(resolve_path("/tmp/../etc/", &u).unwrap(), "/etc");
        assert_eq!(resolve_path("../../..", &u).unwrap(), "/");
        assert_eq!(resolve_path("x", &ROOT).unwrap(), "/root/x");
        assert!(resolve_path("~root/x", &u).is_err());
    }
}
