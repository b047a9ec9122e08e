//! Schemathesis (PyPI) drives Slicer's OpenAPI spec against a live daemon over TCP with the
//! token, with a real node and host group as the path parameters, bounded in time. No 5xx is
//! accepted; a status, content-type or schema mismatch is accepted only when
//! docs/api/slicer-compat.md lists it (operation, check code, response status) with a reason.

use super::{root, third_party, tools, TcpDaemon, TCP, TOKEN};
use crate::common::{privileged, BIN};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One finding: operation ("GET /nodes"), check code ("ST103"), response status, message.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Finding {
    operation: String,
    code: String,
    status: String,
    message: String,
}

/// The findings in a schemathesis NDJSON event report, one per distinct (operation, code,
/// status).
fn findings(ndjson: &str) -> BTreeSet<Finding> {
    let mut out = BTreeSet::new();
    for line in ndjson.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(rec) = v.pointer("/ScenarioFinished/recorder") else {
            continue;
        };
        let Some(checks) = rec["checks"].as_object() else {
            continue;
        };
        for (case, list) in checks {
            for c in list.as_array().into_iter().flatten() {
                let Some(f) = c.pointer("/failure_info/failure") else {
                    continue;
                };
                let status = rec
                    .pointer(&format!("/interactions/{case}/response/status_code"))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into());
                let message: String = f["message"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('\n', " ")
                    .chars()
                    .take(200)
                    .collect();
                out.insert(Finding {
                    operation: f["operation"].as_str().unwrap_or_default().to_string(),
                    code: f["code"].as_str().unwrap_or_default().to_string(),
                    status,
                    message,
                });
            }
        }
    }
    out
}

/// The accepted findings: rows of docs/api/slicer-compat.md's schemathesis table,
/// "| `METHOD /path` | STnnn | status | reason |" (the operation may be `*` for every
/// operation, the status `*` for any 4xx).
fn accepted() -> Vec<(String, String, String)> {
    let doc = std::fs::read_to_string(root().join("docs/api/slicer-compat.md"))
        .expect("docs/api/slicer-compat.md");
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // "", operation, code, status, reason, ""
            if cells.len() < 6 || !cells[2].starts_with("ST") || cells[4].is_empty() {
                return None;
            }
            Some((
                cells[1].trim_matches('`').to_string(),
                cells[2].to_string(),
                cells[3].to_string(),
            ))
        })
        .collect()
}

fn is_accepted(f: &Finding, ok: &[(String, String, String)]) -> bool {
    let server_error = f.status.starts_with('5') || f.code == "ST101" || f.code == "ST102";
    !server_error
        && ok.iter().any(|(op, code, status)| {
            (op == &f.operation || op == "*")
                && code == &f.code
                && (status == &f.status || (status == "*" && f.status.starts_with('4')))
        })
}

#[test]
fn schemathesis_finds_nothing_unlisted_in_slicers_spec() {
    if !privileged() {
        return;
    }
    let tools = tools();
    let d = TcpDaemon::start("sdkst", "10.91.4.0/24");
    let netns = format!("--net={}", d.netns().display());
    let url = format!("http://{TCP}");
    // A real node, so that the {hostname} routes reach it.
    let add = Command::new("nsenter")
        .args([
            &netns, "--", BIN, "vm", "add", &d.tenant, "--url", &url, "--token", TOKEN,
        ])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let node = String::from_utf8_lossy(&add.stdout).trim().to_string();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.hostname\" = \"{node}\"\n\"path.name\" = \"{}\"\n",
            d.tenant
        ),
    )
    .unwrap();
    let report = work.path().join("events.ndjson");
    let mut child = Command::new("nsenter")
        .args([&netns, "--"])
        .arg(tools.join("venv/bin/st"))
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(third_party().join("slicer-openapi.yaml"))
        .args(["--url", &url, "--header", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--workers",
            "2",
            "--request-timeout",
            "60",
            "--seed",
            "10",
            "--no-color",
            "--report",
            "ndjson",
            "--report-ndjson-path",
        ])
        .arg(&report)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run schemathesis");
    let deadline = Instant::now() + Duration::from_secs(360);
    let mut timed_out = false;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = std::fs::read_to_string(&report).unwrap_or_default();
    d.stop_and_assert_clean();
    assert!(!timed_out, "schemathesis ran past its time bound");
    assert!(
        events.contains("EngineFinished"),
        "schemathesis did not finish its run"
    );
    let ok = accepted();
    let all = findings(&events);
    let mut unlisted = Vec::new();
    for f in &all {
        let listed = is_accepted(f, &ok);
        eprintln!(
            "{} {} {} {}: {}",
            if listed { "listed  " } else { "UNLISTED" },
            f.operation,
            f.code,
            f.status,
            f.message
        );
        if !listed {
            unlisted.push(format!(
                "| `{}` | {} | {} | {} |",
                f.operation, f.code, f.status, f.message
            ));
        }
    }
    assert!(
        unlisted.is_empty(),
        "{} schemathesis findings are not listed in docs/api/slicer-compat.md (5xx never are):\n{}",
        unlisted.len(),
        unlisted.join("\n")
    );
}
