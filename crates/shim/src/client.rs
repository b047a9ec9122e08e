//! The shim's client of the host's bulkhead daemon (#16): HTTP/1.1 over the daemon's
//! `api.shim` UNIX socket through `bulkhead_api::Client`, one method per route the shim uses.
//!
//! Invariants: the shim never sends a host path (rootfs and host files travel as a tar body);
//! every daemon refusal comes back as [`DaemonError`] carrying the daemon's own message and
//! code, which `service.rs` turns into a ttrpc status containerd shows.

use bulkhead_api::client::{full_body, Client, ReqBody};
use bulkhead_api::containers::{CreateContainerRequest, Placement};
use bulkhead_api::stats::NodeStat;
use bulkhead_api::{
    BgExecStarted, BgKillRequest, BgWaitExit, ClientError, CreateNodeRequest, CreatedNode,
    Endpoint, Node,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, StatusCode};

use crate::spec::ProcessPlan;

/// A failed call to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The daemon answered with an error (`{"error","code"}`).
    #[error("bulkhead daemon: {message} ({code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The daemon could not be reached or answered something else.
    #[error("bulkhead daemon: {0}")]
    Other(String),
}

impl DaemonError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, DaemonError::Api { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

impl From<ClientError> for DaemonError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { status, body } => DaemonError::Api {
                status,
                code: body.code,
                message: body.error,
            },
            e => DaemonError::Other(e.to_string()),
        }
    }
}

impl From<hyper::Error> for DaemonError {
    fn from(e: hyper::Error) -> Self {
        DaemonError::Other(format!("http: {e}"))
    }
}

type Result<T> = std::result::Result<T, DaemonError>;

/// How a process's terminal starts (cols, rows).
pub type WinSize = (u32, u32);

/// The daemon at one socket.
#[derive(Clone, Debug)]
pub struct Daemon {
    client: Client,
}

impl Daemon {
    /// `socket` is `unix:///path` or a path (the shim config's `socket`).
    pub fn new(socket: &str) -> Result<Self> {
        let ep = Endpoint::parse(socket, None)?;
        Ok(Daemon {
            client: Client::new(ep),
        })
    }

    /// The daemon at the UNIX socket `path`.
    pub fn at(path: std::path::PathBuf) -> Self {
        Daemon {
            client: Client::new(Endpoint::Unix(path)),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        m: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        Ok(self.client.json(m, path, body).await?)
    }

    /// A request whose answer body is read and dropped.
    async fn call(&self, m: Method, path: &str, body: ReqBody, ct: Option<&str>) -> Result<()> {
        let resp = self.client.send_ok(m, path, body, ct).await?;
        resp.into_body().collect().await?;
        Ok(())
    }

    /// `GET /shim/placement`: the tenant and host group of a namespace's pods.
    pub async fn placement(&self, namespace: &str, driver: &str) -> Result<Placement> {
        let p = format!(
            "/shim/placement?namespace={}&driver={}",
            enc(namespace),
            enc(driver)
        );
        self.json(Method::GET, &p, None).await
    }

    /// `POST /hostgroup/{g}/nodes?wait=agent`.
    pub async fn create_node(&self, group: &str, req: &CreateNodeRequest) -> Result<CreatedNode> {
        let body = serde_json::to_value(req).map_err(|e| DaemonError::Other(e.to_string()))?;
        let p = format!("/hostgroup/{}/nodes?wait=agent", enc(group));
        self.json(Method::POST, &p, Some(&body)).await
    }

    /// The node as the daemon lists it (its size), if it is there.
    pub async fn node(&self, group: &str, node: &str) -> Result<Option<Node>> {
        let nodes: Vec<Node> = self
            .json(
                Method::GET,
                &format!("/hostgroup/{}/nodes", enc(group)),
                None,
            )
            .await?;
        Ok(nodes.into_iter().find(|n| n.hostname == node))
    }

    /// `DELETE /hostgroup/{g}/nodes/{node}`; a node already gone is fine.
    pub async fn delete_node(&self, group: &str, node: &str) -> Result<()> {
        let p = format!("/hostgroup/{}/nodes/{}", enc(group), enc(node));
        gone_ok(
            self.call(Method::DELETE, &p, full_body(Bytes::new()), None)
                .await,
        )
    }

    /// `PUT /vm/{node}/containers/{cid}/rootfs` with a streamed tar body.
    pub async fn upload_rootfs<S>(&self, node: &str, cid: &str, tar: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let body = stream_body(tar);
        let p = format!("/vm/{}/containers/{}/rootfs", enc(node), enc(cid));
        self.call(Method::PUT, &p, body, Some("application/x-tar"))
            .await
    }

    /// `POST /vm/{node}/containers`.
    pub async fn create_container(&self, node: &str, req: &CreateContainerRequest) -> Result<()> {
        let body = serde_json::to_vec(req).map_err(|e| DaemonError::Other(e.to_string()))?;
        let p = format!("/vm/{}/containers", enc(node));
        self.call(Method::POST, &p, full_body(body), Some("application/json"))
            .await
    }

    /// `DELETE /vm/{node}/containers/{cid}`; one already gone is fine.
    pub async fn delete_container(&self, node: &str, cid: &str) -> Result<()> {
        let p = format!("/vm/{}/containers/{}", enc(node), enc(cid));
        gone_ok(
            self.call(Method::DELETE, &p, full_body(Bytes::new()), None)
                .await,
        )
    }

    /// `POST /vm/{node}/exec?background=true&container=..`: starts `plan` in container `cid`.
    pub async fn start_exec(
        &self,
        node: &str,
        cid: &str,
        plan: &ProcessPlan,
        stdin: bool,
        tty: Option<WinSize>,
    ) -> Result<BgExecStarted> {
        let p = format!(
            "/vm/{}/exec?{}",
            enc(node),
            exec_query(cid, plan, stdin, tty)
        );
        self.json(Method::POST, &p, None).await
    }

    /// `GET /vm/{node}/exec/{id}/logs?follow=true`: NDJSON [`bulkhead_api::LogFrame`]s.
    /// `from_id`: the first frame wanted (0: from the start).
    pub async fn logs(&self, node: &str, id: &str, from_id: u64) -> Result<Incoming> {
        let p = format!(
            "/vm/{}/exec/{}/logs?follow=true&from_id={from_id}",
            enc(node),
            enc(id)
        );
        let resp = self
            .client
            .send_ok(Method::GET, &p, full_body(Bytes::new()), None)
            .await?;
        Ok(resp.into_body())
    }

    /// `POST /vm/{node}/exec/{id}/stdin?close=true`: `body` streamed into the process's
    /// stdin, which closes when the body ends.
    pub async fn stdin(&self, node: &str, id: &str, body: ReqBody) -> Result<()> {
        let p = format!("/vm/{}/exec/{}/stdin?close=true", enc(node), enc(id));
        self.call(Method::POST, &p, body, Some("application/octet-stream"))
            .await
    }

    /// `POST /vm/{node}/exec/{id}/resize`.
    pub async fn resize(&self, node: &str, id: &str, (cols, rows): WinSize) -> Result<()> {
        let body = serde_json::json!({ "cols": cols, "rows": rows });
        let p = format!("/vm/{}/exec/{}/resize", enc(node), enc(id));
        let body = full_body(serde_json::to_vec(&body).unwrap_or_default());
        self.call(Method::POST, &p, body, Some("application/json"))
            .await
    }

    /// `GET /vm/{node}/exec/{id}/wait-exit?timeout=600`.
    pub async fn wait_exit(&self, node: &str, id: &str) -> Result<BgWaitExit> {
        let p = format!("/vm/{}/exec/{}/wait-exit?timeout=600", enc(node), enc(id));
        self.json(Method::GET, &p, None).await
    }

    /// `POST /vm/{node}/exec/{id}/kill` with signal `sig` alone (`escalate: false`):
    /// containerd escalates by itself, and a SIGHUP must stay a SIGHUP.
    pub async fn kill(&self, node: &str, id: &str, sig: u32) -> Result<()> {
        let req = BgKillRequest {
            signal: Some(sig.to_string()),
            grace_ms: None,
            escalate: Some(false),
        };
        let body = serde_json::to_value(&req).map_err(|e| DaemonError::Other(e.to_string()))?;
        let p = format!("/vm/{}/exec/{}/kill", enc(node), enc(id));
        let _: serde_json::Value = self.json(Method::POST, &p, Some(&body)).await?;
        Ok(())
    }

    /// `DELETE /vm/{node}/exec/{id}`; one already gone is fine.
    pub async fn delete_exec(&self, node: &str, id: &str) -> Result<()> {
        let p = format!("/vm/{}/exec/{}", enc(node), enc(id));
        gone_ok(
            self.call(Method::DELETE, &p, full_body(Bytes::new()), None)
                .await,
        )
    }

    /// `POST /vm/{node}/pause` or `/resume`.
    pub async fn set_paused(&self, node: &str, pause: bool) -> Result<()> {
        let verb = if pause { "pause" } else { "resume" };
        let p = format!("/vm/{}/{verb}", enc(node));
        self.call(Method::POST, &p, full_body(Bytes::new()), None)
            .await
    }

    /// `GET /node/{node}/stats`.
    pub async fn stats(&self, node: &str) -> Result<Option<NodeStat>> {
        let v: Vec<NodeStat> = self
            .json(Method::GET, &format!("/node/{}/stats", enc(node)), None)
            .await?;
        Ok(v.into_iter().next())
    }

    /// `GET /events?tenant=T`: with `follow`, the stream of the tenant's events after `since`
    /// (NDJSON); without, what is kept.
    pub async fn events(&self, tenant: &str, since: u64, follow: bool) -> Result<Incoming> {
        let p = format!(
            "/events?tenant={}&since={since}&follow={follow}",
            enc(tenant)
        );
        let resp = self
            .client
            .send_ok(Method::GET, &p, full_body(Bytes::new()), None)
            .await?;
        Ok(resp.into_body())
    }
}

/// A request body fed from `s` by a task of its own (a body must be `Sync`; a stream made by
/// a blocking thread, such as the rootfs tar, need not be).
pub fn stream_body<S>(s: S) -> ReqBody
where
    S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut s = std::pin::pin!(s);
        while let Some(item) = s.next().await {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    chan_body(rx)
}

/// A request body of the chunks `rx` receives, ending when every sender is gone.
pub fn chan_body(
    rx: tokio::sync::mpsc::Receiver<std::result::Result<Bytes, std::io::Error>>,
) -> ReqBody {
    BodyExt::boxed(StreamBody::new(TryStreamExt::map_ok(
        ChanStream(rx),
        Frame::data,
    )))
}

struct ChanStream(tokio::sync::mpsc::Receiver<std::result::Result<Bytes, std::io::Error>>);

impl Stream for ChanStream {
    type Item = std::result::Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Percent-encodes a path segment or query value, keeping RFC 3986's unreserved characters
/// (ids and node names travel as they are: containerd 1.6 formats error texts with `%`).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn gone_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

/// The exec route's query for `plan` in container `cid` (B1's keys, `exec_query.rs`):
/// a background exec with base64 output (exact bytes), its stdin open when containerd gave a
/// stdin FIFO, on a terminal of `tty`'s size when asked.
pub fn exec_query(cid: &str, plan: &ProcessPlan, stdin: bool, tty: Option<WinSize>) -> String {
    let mut q = vec![
        "background=true".to_string(),
        "stdio=base64".to_string(),
        format!("container={}", enc(cid)),
        format!("uid={}", plan.uid),
        format!("gid={}", plan.gid),
    ];
    let mut args = plan.args.iter();
    if let Some(cmd) = args.next() {
        q.push(format!("cmd={}", enc(cmd)));
    }
    q.extend(args.map(|a| format!("args={}", enc(a))));
    q.extend(plan.env.iter().map(|e| format!("env={}", enc(e))));
    if !plan.cwd.is_empty() {
        q.push(format!("cwd={}", enc(&plan.cwd)));
    }
    if !plan.groups.is_empty() {
        let g: Vec<String> = plan.groups.iter().map(u32::to_string).collect();
        q.push(format!("groups={}", enc(&g.join(","))));
    }
    let lim = |v: u64| {
        if v == u64::MAX {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    for (name, soft, hard) in &plan.rlimits {
        q.push(format!(
            "rlimit={}",
            enc(&format!("{name}:{}:{}", lim(*soft), lim(*hard)))
        ));
    }
    if stdin {
        q.push("stdin=true".into());
    }
    if let Some((cols, rows)) = tty {
        q.push(format!("tty=true&cols={cols}&rows={rows}"));
    }
    q.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_query_carries_the_process() {
        let plan = ProcessPlan {
            args: vec!["sh".into(), "-c".into(), "echo a b".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/work".into(),
            uid: 1000,
            gid: 1001,
            groups: vec![10, 11],
            rlimits: vec![("RLIMIT_NOFILE".into(), 1024, u64::MAX)],
            terminal: true,
        };
        let q = exec_query("c1", &plan, true, Some((100, 30)));
        assert_eq!(
            q,
            "background=true&stdio=base64&container=c1&uid=1000&gid=1001&cmd=sh&args=-c\
             &args=echo%20a%20b&env=PATH%3D%2Fbin&cwd=%2Fwork&groups=10%2C11\
             &rlimit=RLIMIT_NOFILE%3A1024%3Aunlimited&stdin=true&tty=true&cols=100&rows=30"
        );
        let q = exec_query("c1", &plan, false, None);
        assert!(!q.contains("stdin") && !q.contains("tty"), "{q}");
    }

    #[test]
    fn daemon_errors_keep_the_daemons_words() {
        let e = DaemonError::from(ClientError::Api {
            status: StatusCode::FORBIDDEN,
            body: bulkhead_api::ErrorBody {
                error: "kubernetes namespace x maps to no tenant".into(),
                code: "policy_denied".into(),
            },
        });
        assert_eq!(
            e.to_string(),
            "bulkhead daemon: kubernetes namespace x maps to no tenant (policy_denied)"
        );
        assert!(!e.is_not_found());
    }
}
