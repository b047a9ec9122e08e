//! Per-node CPU load averages for stats: CPUs kept busy, from the node's CPU time between two
//! reads, decayed like the kernel's load averages over 1, 5 and 15 minutes. The first read of
//! a node starts all three at its average since it was created.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The last CPU reading and load averages of each node, by node id.
#[derive(Default)]
pub struct Loads(Mutex<HashMap<String, Load>>);

#[derive(Clone, Copy)]
struct Load {
    at: Instant,
    cpu_usec: u64,
    avg: [f64; 3],
}

const WINDOWS: [f64; 3] = [60.0, 300.0, 900.0];

impl Loads {
    /// Folds a CPU reading of `node` into its averages and returns them.
    pub fn update(&self, node: &str, cpu_usec: u64, uptime_s: f64) -> [f64; 3] {
        let now = Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let avg = match m.get(node) {
            Some(l) => {
                let dt = now.duration_since(l.at).as_secs_f64();
                if dt < 0.05 {
                    return l.avg;
                }
                let rate = cpu_usec.saturating_sub(l.cpu_usec) as f64 / 1e6 / dt;
                let mut a = l.avg;
                for (v, w) in a.iter_mut().zip(WINDOWS) {
                    let e = (-dt / w).exp();
                    *v = *v * e + rate * (1.0 - e);
                }
                a
            }
            None => [cpu_usec as f64 / 1e6 / uptime_s.max(1.0); 3],
        };
        m.insert(
            node.to_string(),
            Load {
                at: now,
                cpu_usec,
                avg,
            },
        );
        avg
    }

    /// Forgets nodes that are gone.
    pub fn retain(&self, live: &[String]) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|k, _| live.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_follows_cpu_time() {
        let l = Loads::default();
        assert_eq!(l.update("n", 10_000_000, 10.0), [1.0; 3]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Two CPUs busy for 0.1s: every average rises, the 1-minute one most.
        let a = l.update("n", 10_200_000, 10.1);
        assert!(a[0] > a[1] && a[1] > a[2] && a[2] > 1.0, "{a:?}");
        l.retain(&[]);
        assert_eq!(l.update("n", 0, 10.0), [0.0; 3]);
    }
}
