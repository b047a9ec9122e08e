//! Strict query-string parsing: repeated keys are kept in order, unknown keys and invalid
//! UTF-8 are errors that name the key.

use bulkhead_core::DomainError;

#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn decode(what: &str, s: &str) -> Result<String, DomainError> {
    let plus = s.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus).collect();
    String::from_utf8(bytes)
        .map_err(|_| DomainError::invalid(format!("query {what} is not valid UTF-8")))
}

impl Query {
    /// Parses `raw` and rejects any key not in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, DomainError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode("key", k)?;
            if !allowed.contains(&k.as_str()) {
                return Err(DomainError::invalid(format!(
                    "unknown query parameter {k:?}: allowed are {}",
                    allowed.join(", ")
                )));
            }
            let v = decode(&format!("parameter {k:?}"), v)?;
            pairs.push((k, v));
        }
        Ok(Query { pairs })
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The single value of a key; given twice is an error.
    pub fn one(&self, key: &str) -> Result<Option<String>, DomainError> {
        let v = self.all(key);
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.into_iter().next()),
            _ => Err(DomainError::invalid(format!(
                "query parameter {key:?} given more than once"
            ))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, DomainError> {
        match self.one(key)?.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(v) => Err(DomainError::invalid(format!(
                "query parameter {key:?} must be true or false, not {v:?}"
            ))),
        }
    }

    pub fn u32(&self, key: &str) -> Result<Option<u32>, DomainError> {
        self.one(key)?
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    DomainError::invalid(format!(
                        "query parameter {key:?} must be a non-negative integer, not {v:?}"
                    ))
                })
            })
            .transpose()
    }

    pub fn duration(&self, key: &str) -> Result<Option<std::time::Duration>, DomainError> {
        self.one(key)?
            .map(|v| {
                bulkhead_api::duration::parse(&v)
                    .map_err(|m| DomainError::invalid(format!("query parameter {key:?}: {m}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_and_rejects_unknown() {
        let q = Query::parse(
            Some("cmd=sh&args=-c&args=echo%20hi&stdin=true"),
            &["cmd", "args", "stdin"],
        )
        .unwrap();
        assert_eq!(q.all("args"), vec!["-c", "echo hi"]);
        assert!(q.bool("stdin").unwrap());
        assert!(Query::parse(Some("cmdx=1"), &["cmd"]).is_err());
        assert!(Query::parse(Some("cmd=%ff"), &["cmd"]).is_err());
        let q = Query::parse(Some("uid=-1&b=maybe&c=1&c=2"), &["uid", "b", "c"]).unwrap();
        assert!(q.u32("uid").is_err());
        assert!(q.bool("b").is_err());
        assert!(q.one("c").is_err());
    }
}
