//! `bulkhead volume create | list | show | delete` (#13): a tenant's volumes through a running
//! daemon, with the same `--socket`/`--url`/`--token`/`--json` flags as `bulkhead vm`.

use bulkhead_api::volumes::{CreateVolumeRequest, Size, Volume};
use bulkhead_core::config::quotas::human_bytes;
use std::collections::BTreeMap;
use std::process::ExitCode;

use super::vm::Conn;

#[derive(clap::Subcommand)]
pub enum VolumeCmd {
    /// Make a volume (an encrypted ext4 file system); prints its id
    Create {
        #[command(flatten)]
        conn: Conn,
        /// 1 to 63 lowercase letters, digits or '-', unique in the tenant
        name: String,
        /// Its size: 16M to 16T (e.g. 1G); omit with --from-snapshot
        #[arg(long)]
        size: Option<String>,
        /// Files and directories it may hold (default: one per 16 KiB)
        #[arg(long)]
        inodes: Option<u64>,
        /// KEY=VALUE, repeatable
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Start with the content of this snapshot (an id of `GET /volumes/{id}/snapshots`)
        #[arg(long)]
        from_snapshot: Option<String>,
        /// The tenant, when you may act in several
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the volumes you may see
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one volume and the nodes holding it
    Show {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Delete a volume: its data is wiped (refused while a node holds it)
    Delete {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {s:?} must be KEY=VALUE"))
}

fn row(v: &Volume) -> String {
    let held: Vec<String> = v
        .attachments
        .iter()
        .map(|a| {
            format!(
                "{}:{}{}",
                a.node,
                a.path,
                if a.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    format!(
        "{:<26}  {:<20} {:<8} {:<10} {}",
        v.id,
        v.name,
        human_bytes(v.size_bytes),
        v.state,
        if held.is_empty() {
            "-".into()
        } else {
            held.join(",")
        }
    )
}

const HEADER: &str = "ID                          NAME                 SIZE     STATE      HELD BY";

pub async fn run(c: VolumeCmd) -> anyhow::Result<ExitCode> {
    match c {
        VolumeCmd::Create {
            conn,
            name,
            size,
            inodes,
            labels,
            from_snapshot,
            tenant,
        } => {
            let req = CreateVolumeRequest {
                name,
                size: size.map(Size::Text),
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                inodes,
                from_snapshot,
            };
            let v = conn
                .client()?
                .create_volume(&req, tenant.as_deref())
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", v.id);
            }
        }
        VolumeCmd::List { conn, tenant } => {
            let vs = conn.client()?.list_volumes(tenant.as_deref()).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&vs)?);
            } else {
                println!("{HEADER}");
                for v in &vs {
                    println!("{}", row(v));
                }
            }
        }
        VolumeCmd::Show { conn, id } => {
            let v = conn.client()?.volume(&id).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{HEADER}\n{}", row(&v));
                println!(
                    "tenant {}, {} inodes, created {}",
                    v.tenant, v.inodes, v.created_at
                );
                for (k, val) in &v.labels {
                    println!("label {k}={val}");
                }
                if let Some(s) = &v.from_snapshot {
                    println!("from snapshot {s}");
                }
            }
        }
        VolumeCmd::Delete { conn, id } => {
            conn.client()?.delete_volume(&id).await?;
            if conn.json {
                println!("{}", serde_json::json!({ "id": id, "deleted": true }));
            } else {
                println!("deleted {id} (wiped)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_rows_show_holders() {
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_label("ab").is_err());
        let v = Volume {
            id: "01J".into(),
            tenant: "t".into(),
            name: "data".into(),
            size_bytes: 1 << 30,
            inodes: 65536,
            labels: BTreeMap::new(),
            state: "ready".into(),
            created_at: "x".into(),
            from_snapshot: None,
            attachments: vec![bulkhead_api::volumes::VolumeHolder {
                node: "web-1".into(),
                path: "/data".into(),
                read_only: true,
            }],
        };
        let r = row(&v);
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(cols, ["01J", "data", "1G", "ready", "web-1:/data:ro"]);
    }
}
