//! Task events back to containerd (#16): one ordered queue drained into the crate's
//! `RemotePublisher` (topics from the crate's `Event` impls: `/tasks/create`, `/tasks/exit`,
//! ...), and the OOM follower: the tenant's `GET /events` stream, whose `node.oom_kill`
//! events of the shim's node become TaskOOM.

use std::time::Duration;

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::TaskOOM;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::with_duration;
use containerd_shim::publisher::RemotePublisher;
use http_body_util::BodyExt;
use log::{debug, info, warn};
use tokio::sync::mpsc;

use crate::client::Daemon;

/// The queue of events to publish, in order.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<(String, Box<dyn MessageDyn>)>,
}

impl Events {
    /// Starts forwarding to containerd (namespace `ns`) through `publisher`.
    pub fn start(publisher: RemotePublisher, ns: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Box<dyn MessageDyn>)>();
        tokio::spawn(async move {
            while let Some((topic, e)) = rx.recv().await {
                debug!("publishing {topic}");
                if let Err(e) = publisher
                    .publish(with_duration(Duration::from_secs(5)), &topic, &ns, e)
                    .await
                {
                    warn!("publish {topic} to containerd: {e}");
                }
            }
        });
        Events { tx }
    }

    pub fn send(&self, e: impl Event + 'static) {
        let topic = e.topic();
        info!("event {topic}");
        let _ = self.tx.send((topic, Box::new(e)));
    }
}

/// Follows the tenant's events for the node's OOM kills until the stream ends for good (the
/// node's task is deleted: the caller aborts the task). `containers` names the containers
/// that get a TaskOOM for each kill.
pub async fn follow_oom(
    daemon: Daemon,
    tenant: String,
    node: String,
    containers: impl Fn() -> Vec<String>,
    events: Events,
) {
    // Start after what is kept: earlier kills are another node's of the same name.
    let mut since = latest_cursor(&daemon, &tenant).await.unwrap_or(0);
    loop {
        match daemon.events(&tenant, since, true).await {
            Ok(mut body) => {
                let mut buf = Vec::new();
                while let Some(Ok(f)) = body.frame().await {
                    let Ok(data) = f.into_data() else { continue };
                    buf.extend_from_slice(&data);
                    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                            continue;
                        };
                        since = since.max(ev["cursor"].as_u64().unwrap_or(0));
                        if is_oom_of(&ev, &node) {
                            for c in containers() {
                                events.send(TaskOOM {
                                    container_id: c,
                                    ..Default::default()
                                });
                            }
                        }
                    }
                }
            }
            Err(e) => debug!("events of tenant {tenant}: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn latest_cursor(daemon: &Daemon, tenant: &str) -> Option<u64> {
    let body = daemon.events(tenant, 0, false).await.ok()?;
    let bytes = body.collect().await.ok()?.to_bytes();
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter_map(|v| v["cursor"].as_u64())
        .max()
}

/// Whether a daemon event is an OOM kill in `node` (kind `node.oom_kill`).
pub fn is_oom_of(ev: &serde_json::Value, node: &str) -> bool {
    ev["kind"] == "node.oom_kill" && ev["node"] == node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nodes_oom_kills_count() {
        let ev =
            |kind: &str, node: &str| serde_json::json!({"cursor": 3, "kind": kind, "node": node});
        assert!(is_oom_of(&ev("node.oom_kill", "pod-1"), "pod-1"));
        assert!(!is_oom_of(&ev("node.oom_kill", "pod-2"), "pod-1"));
        assert!(!is_oom_of(&ev("node.created", "pod-1"), "pod-1"));
    }
}
