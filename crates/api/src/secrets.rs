//! `/secrets` (#13): Slicer's secrets API, per tenant. A secret is a named blob a node gets as
//! a file on a tmpfs at `/run/secrets/<name>` (`"secrets": [...]` at create), with the owner
//! and mode given here.
//!
//! Invariants: a secret's content (`data`, base64 on the wire) never appears in `Debug`
//! output, and a body whose `data` is not a string is refused without echoing it; listing
//! returns metadata only ([`Secret`]).

use serde::{Deserialize, Deserializer, Serialize};

/// The largest secret accepted, in bytes (before base64): a secret is a key, a token or a
/// small config file; its base64 must fit a JSON body (64 KiB).
pub const MAX_SECRET_BYTES: usize = 32 * 1024;

/// File mode a secret gets when `permissions` is not given.
pub const DEFAULT_PERMISSIONS: u32 = 0o600;

/// One entry of `GET /secrets`: metadata only, never the content. Slicer's Go SDK reads
/// `modified_at`; Slicer's OpenAPI spec names it `mod_time`: both are sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    /// The content's length in bytes.
    pub size: u64,
    /// Octal file mode, four digits (`"0600"`).
    pub permissions: String,
    pub uid: u32,
    pub gid: u32,
    pub modified_at: String,
    #[serde(default)]
    pub mod_time: String,
    /// bulkhead: when it was created.
    #[serde(default)]
    pub created_at: String,
}

/// The base64 content of a secret as it arrives; never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SecretData(pub String);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes of base64, not shown>", self.0.len())
    }
}

impl<'de> Deserialize<'de> for SecretData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a Value, so that a non-string is refused without serde quoting it.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(SecretData(s)),
            _ => Err(serde::de::Error::custom(
                "data must be a string: the secret's content in base64",
            )),
        }
    }
}

impl SecretData {
    /// The content, decoded; the error never quotes it.
    pub fn decode(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.0.trim())
            .map_err(|_| {
                "data is not valid base64 (standard alphabet, padded): encode the secret's content, e.g. `base64 -w0 FILE`".to_string()
            })?;
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(format!(
                "the secret is {} bytes: at most {MAX_SECRET_BYTES} are accepted",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

/// Body of `POST /secrets`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    pub name: String,
    pub data: SecretData,
    /// Octal file mode (`"0400"`, `"600"`); default `0600`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// Body of `PATCH /secrets/{name}`: each field given changes it. An empty `data` keeps the
/// content (Slicer's Go SDK always sends `data`, empty when only metadata changes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecretRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<SecretData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A secret's name: it becomes a file name in the node (`/run/secrets/<name>`), so 1 to 128
/// of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid secret name {name:?}: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit (it becomes /run/secrets/<name> in the node)"
        ))
    }
}

/// Parses Slicer's octal `permissions` (`"0600"`, `"600"`, `"0o600"`): permission bits only
/// (no setuid, setgid or sticky bit on a secret).
pub fn parse_permissions(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let mode = (!digits.is_empty() && digits.len() <= 4)
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten();
    match mode {
        Some(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "invalid permissions {s:?}: give an octal file mode without special bits, e.g. \"0400\" or \"0640\""
        )),
    }
}

/// A mode as Slicer shows it: four octal digits.
pub fn format_permissions(mode: u32) -> String {
    format!("{mode:04o}")
}

/// Owners inside a node: the node's user namespace maps uids and gids 0..65536.
pub fn validate_owner(what: &str, id: u32) -> Result<(), String> {
    if id < 65535 {
        Ok(())
    } else {
        Err(format!(
            "{what} {id} is outside a node's ids (0 to 65534): give an id that exists in the node"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_permissions_owners() {
        for ok in ["db-password", "A.b_c", "0"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", ".env", "-x", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_permissions("0600"), Ok(0o600));
        assert_eq!(parse_permissions("400"), Ok(0o400));
        assert_eq!(parse_permissions("0o640"), Ok(0o640));
        for bad in ["4755", "0800", "", "rw", "07777"] {
            assert!(parse_permissions(bad).is_err(), "{bad}");
        }
        assert_eq!(format_permissions(0o400), "0400");
        assert!(validate_owner("uid", 65534).is_ok());
        assert!(validate_owner("uid", 65535).is_err());
    }

    #[test]
    fn data_is_never_echoed() {
        let r: CreateSecretRequest =
            serde_json::from_str(r#"{"name":"a","data":"aGVsbG8=","permissions":"0400"}"#).unwrap();
        assert_eq!(r.data.decode().unwrap(), b"hello");
        assert!(!format!("{r:?}").contains("aGVsbG8"));
        let e = serde_json::from_str::<CreateSecretRequest>(r#"{"name":"a","data":987654321}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("987654321"), "{e}");
        let e = SecretData("c2VjcmV0!!".into()).decode().unwrap_err();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let big = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_SECRET_BYTES + 1])
        };
        assert!(SecretData(big).decode().unwrap_err().contains("at most"));
        let u: UpdateSecretRequest = serde_json::from_str(r#"{"data":"","uid":0}"#).unwrap();
        assert_eq!(u.data, Some(SecretData(String::new())));
    }
}
