//! `bulkhead vm forward NODE -L SPEC`: listens here and carries each accepted connection to a
//! port of the node over its own `forward` WebSocket (as Slicer's `vm forward -L` does), until
//! interrupted. SPEC is `PORT` or `HOST:PORT` (the same port here and in the node),
//! `LPORT:RHOST:RPORT`, or `LHOST:LPORT:RHOST:RPORT`; listening defaults to 127.0.0.1 and
//! LPORT 0 picks a free port. The remote host is the node's loopback (`127.0.0.1`) or its
//! address: a forward reaches only the node.

use anyhow::{bail, Context};
use bulkhead_api::client::enc;
use bulkhead_api::Client;
use futures_util::{SinkExt, StreamExt};
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// One `-L` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub listen: String,
    /// `HOST:PORT` in the node, as sent in `X-Inlets-Upstream`.
    pub remote: String,
}

pub fn parse_spec(spec: &str) -> anyhow::Result<Mapping> {
    let p: Vec<&str> = spec.split(':').collect();
    let port = |s: &str| -> anyhow::Result<u16> {
        s.parse()
            .with_context(|| format!("{s:?} in {spec:?} is not a port"))
    };
    let (lhost, lport, rhost, rport) = match p.as_slice() {
        [port_] => ("127.0.0.1", port(port_)?, "127.0.0.1", port(port_)?),
        [h, pt] => (*h, port(pt)?, *h, port(pt)?),
        [lp, rh, rp] => ("127.0.0.1", port(lp)?, *rh, port(rp)?),
        [lh, lp, rh, rp] => (*lh, port(lp)?, *rh, port(rp)?),
        _ => bail!("{spec:?} is not a forward: use PORT, HOST:PORT, LPORT:HOST:PORT or LHOST:LPORT:HOST:PORT (TCP only)"),
    };
    if rport == 0 {
        bail!("{spec:?}: the node's port cannot be 0");
    }
    Ok(Mapping {
        listen: format!("{lhost}:{lport}"),
        remote: format!("{rhost}:{rport}"),
    })
}

pub async fn forward(client: &Client, node: &str, specs: &[String]) -> anyhow::Result<ExitCode> {
    let mut listeners = Vec::new();
    for s in specs {
        let m = parse_spec(s)?;
        let l = TcpListener::bind(&m.listen)
            .await
            .with_context(|| format!("listening on {}", m.listen))?;
        println!("{} -> {node}:{}", l.local_addr()?, m.remote);
        listeners.push((l, m));
    }
    let path = format!("/vm/{}/forward", enc(node));
    let mut tasks = tokio::task::JoinSet::new();
    for (l, m) in listeners {
        let (client, path) = (client.clone(), path.clone());
        tasks.spawn(async move {
            loop {
                let Ok((c, _)) = l.accept().await else {
                    continue;
                };
                let (client, path, remote) = (client.clone(), path.clone(), m.remote.clone());
                tokio::spawn(async move {
                    if let Err(e) = tunnel(&client, &path, &remote, c).await {
                        eprintln!("forward to {remote}: {e}");
                    }
                });
            }
        });
    }
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

/// Carries one connection.
async fn tunnel(client: &Client, path: &str, remote: &str, c: TcpStream) -> anyhow::Result<()> {
    let ws = client
        .websocket(
            path,
            &[
                ("x-inlets-upstream", remote),
                ("x-inlets-mode", "local"),
                ("x-inlets-client-id", "bulkhead"),
            ],
        )
        .await?;
    let (mut tx, mut rx) = ws.split();
    let (mut rd, mut wr) = c.into_split();
    let up = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let down = async {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_as_slicers_cli_reads_them() {
        let m = |l: &str, r: &str| Mapping {
            listen: l.into(),
            remote: r.into(),
        };
        assert_eq!(
            parse_spec("8080").unwrap(),
            m("127.0.0.1:8080", "127.0.0.1:8080")
        );
        assert_eq!(
            parse_spec("127.0.0.1:9000").unwrap(),
            m("127.0.0.1:9000", "127.0.0.1:9000")
        );
        assert_eq!(
            parse_spec("0:127.0.0.1:80").unwrap(),
            m("127.0.0.1:0", "127.0.0.1:80")
        );
        assert_eq!(
            parse_spec("0.0.0.0:81:127.0.0.1:80").unwrap(),
            m("0.0.0.0:81", "127.0.0.1:80")
        );
        assert!(parse_spec("a:b").is_err());
        assert!(parse_spec("1:2:3:4:5").is_err());
        assert!(parse_spec("80:127.0.0.1:0").is_err());
    }
}
