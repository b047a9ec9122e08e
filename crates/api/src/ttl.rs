//! A node's `timeout` on the wire (#15, B: node TTL): whole seconds (`1800`, as E2B's SDKs
//! send it) or a string (`"1800"`, `"30m"`, `"1h30m"`). This module only keeps what was sent;
//! `bulkhead_core::ttl` parses and bounds it, so every surface (Slicer's create, the CLI,
//! E2B's control plane) says the same thing about a bad one.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `timeout` as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeTimeout {
    /// A JSON number: whole seconds (anything else is refused when it is parsed).
    Number(serde_json::Number),
    /// A JSON string: whole seconds or a duration such as `"30m"`.
    Text(String),
}

impl NodeTimeout {
    /// What was sent, as the caller wrote it (for error messages).
    pub fn shown(&self) -> String {
        match self {
            NodeTimeout::Number(n) => n.to_string(),
            NodeTimeout::Text(s) => format!("{s:?}"),
        }
    }
}

impl Serialize for NodeTimeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NodeTimeout::Number(n) => n.serialize(s),
            NodeTimeout::Text(t) => t.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for NodeTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => Ok(NodeTimeout::Number(n)),
            serde_json::Value::String(s) => Ok(NodeTimeout::Text(s)),
            _ => Err(serde::de::Error::custom(
                "timeout must be whole seconds (e.g. 1800) or a duration string (e.g. \"30m\")",
            )),
        }
    }
}

/// Body of `POST /vm/{node}/timeout` (#15, B): the node's timeout from now, or `null` for
/// none; `on_expiry` `"delete"` (the default) or `"pause"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTimeoutRequest {
    /// Absent: refused (say `null` to clear); `null`: no timeout; else as a create's.
    #[serde(default, deserialize_with = "present")]
    pub timeout: Option<Option<NodeTimeout>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<String>,
}

/// A key that is present (`null` included) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_timeout_tells_absent_from_null() {
        let r: SetTimeoutRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r.timeout, None);
        let r: SetTimeoutRequest = serde_json::from_str(r#"{"timeout":null}"#).unwrap();
        assert_eq!(r.timeout, Some(None));
        let r: SetTimeoutRequest =
            serde_json::from_str(r#"{"timeout":"2s","on_expiry":"pause"}"#).unwrap();
        assert_eq!(r.timeout, Some(Some(NodeTimeout::Text("2s".into()))));
        assert_eq!(r.on_expiry.as_deref(), Some("pause"));
        assert!(serde_json::from_str::<SetTimeoutRequest>(r#"{"ttl":1}"#).is_err());
    }

    #[test]
    fn keeps_numbers_and_strings_and_refuses_the_rest() {
        let n: NodeTimeout = serde_json::from_str("1800").unwrap();
        assert_eq!(n, NodeTimeout::Number(1800u64.into()));
        assert_eq!(serde_json::to_string(&n).unwrap(), "1800");
        let t: NodeTimeout = serde_json::from_str("\"30m\"").unwrap();
        assert_eq!(t, NodeTimeout::Text("30m".into()));
        assert_eq!(t.shown(), "\"30m\"");
        for bad in ["true", "[]", "{}"] {
            let e = serde_json::from_str::<NodeTimeout>(bad).unwrap_err();
            assert!(e.to_string().contains("whole seconds"), "{bad}: {e}");
        }
    }
}
