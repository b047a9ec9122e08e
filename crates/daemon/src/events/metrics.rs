//! The metrics of part B (#14) in Prometheus text: events emitted, authorization denials by
//! principal and their spikes, the event webhook's deliveries, and which of the daemon's
//! files changed since start. Rendered by `GET /metrics` for the tenants the caller may see.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::app::App;

/// A label value as Prometheus text needs it (`\`, `"` and newlines escaped).
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The lines for `tenants` (the daemon-wide integrity gauge once, when there is any).
pub fn metrics(tenants: &[std::sync::Arc<App>]) -> String {
    let mut out = String::new();
    if tenants.is_empty() {
        return out;
    }
    let name = "bulkhead_events_total";
    head(
        &mut out,
        name,
        "counter",
        "Events emitted in the tenant since the daemon started (GET /events).",
    );
    for a in tenants {
        let t = &a.tenant;
        let _ = writeln!(
            out,
            "{name}{{tenant=\"{}\"}} {}",
            t.name,
            t.events.emitted.load(Ordering::Relaxed)
        );
    }
    let name = "bulkhead_auth_denials_total";
    head(
        &mut out,
        name,
        "counter",
        "Requests refused by authorization in the tenant, by principal (since the daemon started).",
    );
    for a in tenants {
        let t = &a.tenant;
        for (p, n) in t.events.denials.totals() {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\",principal=\"{}\"}} {n}",
                t.name,
                label(&p)
            );
        }
    }
    let name = "bulkhead_auth_denial_spikes_total";
    head(&mut out, name, "counter", "auth.denial_spike events: a principal's denials reached detection.denial_spike.threshold within its window.");
    for a in tenants {
        let t = &a.tenant;
        let _ = writeln!(
            out,
            "{name}{{tenant=\"{}\"}} {}",
            t.name,
            t.events.denials.spikes()
        );
    }
    let hooks: Vec<_> = tenants
        .iter()
        .filter_map(|a| {
            a.tenant
                .events
                .webhook()
                .map(|w| (a.tenant.name.as_str(), w))
        })
        .collect();
    if !hooks.is_empty() {
        type Pick = fn(&super::webhook::Sink) -> u64;
        let families: [(&str, &str, Pick); 4] = [
            ("bulkhead_event_webhook_delivered_total", "Events the event webhook accepted (2xx).", |w| w.delivered.load(Ordering::Relaxed)),
            ("bulkhead_event_webhook_retries_total", "Event webhook deliveries tried again after a failure.", |w| w.retried.load(Ordering::Relaxed)),
            ("bulkhead_event_webhook_failed_total", "Events given up after events.webhook.retries failed deliveries (still on GET /events).", |w| w.failed.load(Ordering::Relaxed)),
            ("bulkhead_event_webhook_dropped_total", "Events dropped unsent because the webhook buffer (events.webhook.buffer) was full: the oldest go first.", |w| w.dropped.load(Ordering::Relaxed)),
        ];
        for (name, help, pick) in families {
            head(&mut out, name, "counter", help);
            for (t, w) in &hooks {
                let _ = writeln!(out, "{name}{{tenant=\"{t}\"}} {}", pick(w));
            }
        }
    }
    let name = "bulkhead_integrity_changed";
    head(&mut out, name, "gauge", "1 when the daemon's binary or config file differs on disk from what it was at start (see GET /info integrity).");
    for f in tenants[0].host.integrity.files() {
        let _ = writeln!(
            out,
            "{name}{{file=\"{}\"}} {}",
            f.name,
            u8::from(f.changed())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
