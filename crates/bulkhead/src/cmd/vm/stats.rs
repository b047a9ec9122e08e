//! `bulkhead vm stats [NODE]`: what nodes use now (`GET /nodes/stats`, `GET /node/{node}/stats`),
//! as a table or, with `--json`, as the API's `SlicerNodeStat` list.

use bulkhead_api::client::enc;
use bulkhead_api::stats::NodeStat;
use bulkhead_api::Client;

pub async fn stats(client: &Client, node: Option<&str>, json: bool) -> anyhow::Result<()> {
    let path = match node {
        Some(n) => format!("/node/{}/stats", enc(n)),
        None => "/nodes/stats".to_string(),
    };
    let stats: Vec<NodeStat> = client.get(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>6} {:>8} {:>10} {:>10} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "HOSTNAME",
        "LOAD1",
        "CPU_S",
        "MEM_MB",
        "LIMIT_MB",
        "PIDS",
        "NET_RX_KB",
        "NET_TX_KB",
        "DISK_R_KB",
        "DISK_W_KB"
    );
    for s in stats {
        match &s.snapshot {
            Some(x) => println!(
                "{:<24} {:>6.2} {:>8.1} {:>10} {:>10} {:>6} {:>10} {:>10} {:>10} {:>10}",
                s.hostname,
                x.load_avg1,
                x.cpu_usage_seconds,
                x.memory_used >> 20,
                x.total_memory >> 20,
                x.pids,
                x.network_read_total as u64 >> 10,
                x.network_write_total as u64 >> 10,
                x.disk_read_total as u64 >> 10,
                x.disk_write_total as u64 >> 10,
            ),
            None => println!("{:<24} error: {}", s.hostname, s.error),
        }
    }
    Ok(())
}
