//! WebSockets to the daemon (`/vm/{node}/shell`, `/vm/{node}/forward`) over the same endpoints
//! as [`Client`](crate::Client) ([`Client::connect`]): a UNIX socket, or TCP or TLS with the
//! bearer token. A refused
//! upgrade comes back as the daemon's `{"error","code"}` answer ([`ClientError::Api`]).

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use crate::client::{Client, ClientError, Endpoint};
use crate::types::ErrorBody;

pub use crate::client::Io;

/// A WebSocket to the daemon.
pub type Socket = WebSocketStream<Box<dyn Io>>;

impl Client {
    /// Opens a WebSocket on `path_and_query` with extra `headers`.
    pub async fn websocket(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Socket, ClientError> {
        let io = self.connect().await?;
        let host = match self.endpoint() {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp { addr, .. } | Endpoint::Https { addr, .. } => addr.clone(),
        };
        let token = self.endpoint().token();
        let usage = |e: String| ClientError::Usage(format!("bad websocket request: {e}"));
        let mut req = format!("ws://{host}{path_and_query}")
            .into_client_request()
            .map_err(|e| usage(e.to_string()))?;
        let h = req.headers_mut();
        if let Some(t) = token {
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| usage(e.to_string()))?,
            );
        }
        for (k, v) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| usage(e.to_string()))?;
            h.insert(
                name,
                HeaderValue::from_str(v).map_err(|e| usage(e.to_string()))?,
            );
        }
        match tokio_tungstenite::client_async(req, io).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(resp)) => {
                let status = resp.status();
                let bytes = resp.body().clone().unwrap_or_default();
                let body =
                    serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
                        error: String::from_utf8_lossy(&bytes).into_owned(),
                        code: "unknown".into(),
                    });
                Err(ClientError::Api {
                    status: hyper::StatusCode::from_u16(status.as_u16())
                        .unwrap_or(hyper::StatusCode::BAD_GATEWAY),
                    body,
                })
            }
            Err(e) => match self.endpoint() {
                Endpoint::Tcp { addr, .. } => Err(ClientError::Decode(format!(
                    "websocket handshake with {}: {e} (if the daemon's TCP listener has api.tcp.tls, use https://{addr})",
                    self.endpoint().url()
                ))),
                _ => Err(ClientError::Decode(format!("websocket handshake: {e}"))),
            },
        }
    }
}
