//! `bulkhead quota` (issue #12, ADR 0025): each tenant the caller may see, its use against
//! its quotas (`GET /quota`).

use bulkhead_api::quota::{QuotaFigure, QuotaReport};
use bulkhead_core::config::quotas::human_bytes;
use std::process::ExitCode;

use super::vm::Conn;

#[derive(clap::Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(a: QuotaArgs) -> anyhow::Result<ExitCode> {
    let report = a.conn.client()?.quota().await?;
    if a.conn.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `used/limit` per quota and tenant; `-` for no limit.
fn table(r: &QuotaReport) -> String {
    let cell = |f: &QuotaFigure, bytes: bool| {
        let show = |v: u64| {
            if bytes && v != 0 {
                human_bytes(v)
            } else {
                v.to_string()
            }
        };
        let limit = f.limit.map_or_else(|| "-".to_string(), show);
        format!("{}/{limit}", show(f.used))
    };
    let mut out = format!(
        "{:<16} {:<12} {:<12} {:<16} {:<16}\n",
        "TENANT", "NODES", "VCPU", "RAM", "STORAGE"
    );
    for t in &r.tenants {
        out.push_str(&format!(
            "{:<16} {:<12} {:<12} {:<16} {:<16}\n",
            t.tenant,
            cell(&t.nodes, false),
            cell(&t.vcpu, false),
            cell(&t.ram_bytes, true),
            cell(&t.storage_bytes, true),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_api::quota::TenantQuota;

    #[test]
    fn the_table_shows_use_against_limits() {
        let f = |used, limit| QuotaFigure { used, limit };
        let r = QuotaReport {
            tenants: vec![TenantQuota {
                tenant: "a3cf".into(),
                nodes: f(3, Some(20)),
                vcpu: f(6, None),
                ram_bytes: f(3 << 30, Some(32 << 30)),
                storage_bytes: f(0, None),
            }],
        };
        let t = table(&r);
        let row = t.lines().nth(1).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols, ["a3cf", "3/20", "6/-", "3G/32G", "0/-"]);
    }
}
