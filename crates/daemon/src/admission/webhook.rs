//! The policy webhook's client (ADR 0024): one `POST` of a JSON question to
//! `http://` (loopback only), `https://` (the system's roots) or `unix://PATH`
//! (`crate::webhook_post`, shared with the event webhook), and its answer read as `{"allow": bool, "reason"?: string, "request"?: object}`.
//!
//! Invariants: the whole exchange (connect, TLS, request, answer) is bounded by the
//! configured timeout and the answer's body by [`MAX_ANSWER`]; no redirects are followed;
//! every failure is a [`WebhookError`] whose message says which failure it was, so the
//! caller can deny (or, with `on_error: allow`, pass) saying why. Nothing here decides.

use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use std::time::Duration;

use bulkhead_core::config::policy::Webhook;

/// The largest answer read from the webhook.
pub const MAX_ANSWER: usize = 64 << 10;

/// Why the webhook gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("policy webhook timed out after {}", human(*.0))]
    Timeout(Duration),
    #[error("policy webhook is unreachable: {0}")]
    Unreachable(String),
    #[error("policy webhook answered HTTP {0} (expected 2xx)")]
    Status(u16),
    #[error("policy webhook's answer is larger than {} KiB", MAX_ANSWER >> 10)]
    TooLarge,
    #[error("policy webhook's answer is not the expected JSON {{\"allow\": bool, \"reason\"?, \"request\"?}}: {0}")]
    BadAnswer(String),
}

/// A duration as a config would write it (`2s`, `150ms`).
pub fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What the webhook answered.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Answer {
    pub allow: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// The narrowed request, in the shape it was sent.
    #[serde(default)]
    pub request: Option<serde_json::Value>,
}

/// A tenant's webhook: its config and its poster (for https, a TLS client made at first use).
pub struct Client {
    pub hook: Webhook,
    poster: crate::webhook_post::Poster,
}

impl Client {
    pub fn new(hook: Webhook) -> Client {
        Client {
            hook,
            poster: crate::webhook_post::Poster::new(),
        }
    }

    /// Asks the webhook `question` (a JSON document).
    pub async fn ask(&self, question: &serde_json::Value) -> Result<Answer, WebhookError> {
        let body = serde_json::to_vec(question)
            .map_err(|e| WebhookError::BadAnswer(format!("cannot encode the question: {e}")))?;
        let t = self.hook.timeout;
        let raw = match tokio::time::timeout(t, self.exchange(body)).await {
            Ok(r) => r?,
            Err(_) => return Err(WebhookError::Timeout(t)),
        };
        serde_json::from_slice(&raw).map_err(|e| WebhookError::BadAnswer(e.to_string()))
    }

    async fn exchange(&self, body: Vec<u8>) -> Result<Vec<u8>, WebhookError> {
        let accept = [(hyper::header::ACCEPT, "application/json")];
        let resp = (self.poster)
            .post(&self.hook.target, &accept, body)
            .await
            .map_err(WebhookError::Unreachable)?;
        if !resp.status().is_success() {
            return Err(WebhookError::Status(resp.status().as_u16()));
        }
        match Limited::new(resp.into_body(), MAX_ANSWER).collect().await {
            Ok(b) => Ok(b.to_bytes().to_vec()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(WebhookError::TooLarge)
            }
            Err(e) => Err(WebhookError::Unreachable(format!(
                "reading the answer: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_core::config::policy::{OnError, WebhookTarget};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server on a UNIX socket answering `status` and `body` after `delay`.
    async fn server(status: &str, body: &str, delay: Duration) -> (tempfile::TempDir, Client) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(delay).await;
            let _ = s.write_all(answer.as_bytes()).await;
        });
        let c = Client::new(Webhook {
            url: format!("unix://{}", path.display()),
            target: WebhookTarget::Unix(path),
            timeout: Duration::from_millis(300),
            on_error: OnError::Deny,
        });
        (dir, c)
    }

    fn q() -> serde_json::Value {
        serde_json::json!({"action": "exec"})
    }

    #[tokio::test]
    async fn answers_and_failures_are_told_apart() {
        let ok = r#"{"allow": false, "reason": "not today"}"#;
        let (_d, c) = server("200 OK", ok, Duration::ZERO).await;
        let a = c.ask(&q()).await.unwrap();
        assert_eq!((a.allow, a.reason.as_deref()), (false, Some("not today")));

        let (_d, c) = server("500 Oops", "", Duration::ZERO).await;
        let e = c.ask(&q()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy webhook answered HTTP 500 (expected 2xx)"
        );

        for bad in ["hello", "{}", r#"{"allow": "yes"}"#] {
            let (_d, c) = server("200 OK", bad, Duration::ZERO).await;
            let e = c.ask(&q()).await.unwrap_err();
            assert!(matches!(e, WebhookError::BadAnswer(_)), "{e}");
        }

        let (_d, c) = server("200 OK", ok, Duration::from_secs(2)).await;
        let e = c.ask(&q()).await.unwrap_err();
        assert_eq!(e.to_string(), "policy webhook timed out after 300ms");

        let big = " ".repeat(MAX_ANSWER + 1);
        let (_d, c) = server("200 OK", &big, Duration::ZERO).await;
        let e = c.ask(&q()).await.unwrap_err();
        assert!(matches!(e, WebhookError::TooLarge), "{e}");

        let c = Client::new(Webhook {
            target: WebhookTarget::Unix("/nonexistent/hook.sock".into()),
            ..c.hook.clone()
        });
        let e = c.ask(&q()).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("policy webhook is unreachable: connecting to /nonexistent/hook.sock"),
            "{e}"
        );
        assert_eq!(human(Duration::from_secs(2)), "2s");
    }
}
