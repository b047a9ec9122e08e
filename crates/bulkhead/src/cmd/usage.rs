//! `bulkhead usage` (#14, part E; ADR 0035): what the tenants' nodes used (`GET /usage`), as a
//! table or, with `--json`, the API's answer.

use bulkhead_api::usage::UsageReport;
use std::process::ExitCode;

use super::vm::Conn;

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Start of the window: RFC 3339 (2026-11-30T14:00:00Z) or UNIX seconds
    #[arg(long)]
    from: Option<String>,
    /// End of the window (exclusive), as --from
    #[arg(long)]
    to: Option<String>,
    /// One row per tenant or per node
    #[arg(long, value_parser = ["tenant", "node"], default_value = "tenant")]
    group_by: String,
    /// Only this tenant (a shared daemon's global-admin sees every tenant otherwise)
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// Bytes in binary units with one decimal (`64.0M`, `512B`).
fn human_bytes(v: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if v >= 1u64 << shift {
            return format!("{:.1}{unit}", v as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{v}B")
}

/// Percent-encodes a query value (times carry `:` and `+`).
fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path(a: &UsageArgs) -> String {
    let mut q = vec![format!("group_by={}", enc(&a.group_by))];
    for (k, v) in [("from", &a.from), ("to", &a.to), ("tenant", &a.tenant)] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    format!("/usage?{}", q.join("&"))
}

pub async fn run(a: UsageArgs) -> anyhow::Result<ExitCode> {
    let report: UsageReport = a.conn.client()?.get(&path(&a)).await?;
    if a.conn.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn table(r: &UsageReport) -> String {
    let by_node = r.group_by == "node";
    let mut out = format!(
        "{:<16} {:<20} {:>10} {:>10} {:>12} {:>8} {:>10} {:>10} {:>12} {:>7}\n",
        "TENANT",
        if by_node { "NODE" } else { "" },
        "NODE_S",
        "CPU_S",
        "MEM_GIB_S",
        "MEM_PEAK",
        "NET_RX",
        "NET_TX",
        "DISK_GIB_S",
        "EXECS"
    );
    const GIB: f64 = (1u64 << 30) as f64;
    for u in &r.usage {
        let f = &u.figures;
        let node = match (&u.node, u.deleted) {
            (Some(n), true) => format!("{n} (deleted)"),
            (Some(n), false) => n.clone(),
            (None, _) => String::new(),
        };
        out.push_str(&format!(
            "{:<16} {:<20} {:>10.1} {:>10.2} {:>12.3} {:>8} {:>10} {:>10} {:>12.3} {:>7}\n",
            u.tenant,
            node,
            f.node_seconds,
            f.cpu_seconds,
            f.memory_byte_seconds / GIB,
            human_bytes(f.memory_peak_bytes),
            human_bytes(f.network_rx_bytes),
            human_bytes(f.network_tx_bytes),
            f.storage_byte_seconds / GIB,
            f.execs,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_api::usage::{UsageFigures, UsageRow};

    #[test]
    fn the_table_has_a_row_per_node_and_marks_deleted_ones() {
        let r = UsageReport {
            from: None,
            to: None,
            group_by: "node".into(),
            bucket_seconds: 60,
            usage: vec![UsageRow {
                tenant: "a3cf".into(),
                node: Some("web-1".into()),
                node_id: Some("n".into()),
                deleted: true,
                figures: UsageFigures {
                    node_seconds: 12.0,
                    cpu_seconds: 3.04,
                    memory_peak_bytes: 64 << 20,
                    execs: 2,
                    ..Default::default()
                },
            }],
        };
        let t = table(&r);
        let row = t.lines().nth(1).unwrap();
        assert!(
            row.contains("web-1 (deleted)") && row.contains("3.04"),
            "{row}"
        );
        assert!(
            row.contains("64.0M") && row.trim_end().ends_with('2'),
            "{row}"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            enc("2026-11-30T14:00:00+01:00"),
            "2026-11-30T14%3A00%3A00%2B01%3A00"
        );
    }
}
