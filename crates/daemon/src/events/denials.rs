//! Authorization denials per principal, in one tenant (#14): a counter for the metric
//! `bulkhead_auth_denials_total{tenant,principal}` and the spike rule of
//! `detection.denial_spike`: when a principal's denials within the window reach the
//! threshold, one `auth.denial_spike` (then none for that principal until a window has passed).
//!
//! Invariants: memory is bounded: at most [`MAX_PRINCIPALS`] principals are told apart (the
//! rest are counted as [`OTHER`]), and each keeps at most `threshold` recent denial times.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bulkhead_core::config::events::{DEFAULT_SPIKE_THRESHOLD, DEFAULT_SPIKE_WINDOW};

/// Principals told apart per tenant; beyond this they share [`OTHER`].
pub const MAX_PRINCIPALS: usize = 1000;
/// The principal label of denials beyond [`MAX_PRINCIPALS`].
pub const OTHER: &str = "_other";

#[derive(Default)]
struct One {
    total: u64,
    recent: VecDeque<Instant>,
    fired: Option<Instant>,
}

struct Inner {
    threshold: u32,
    window: Duration,
    by: HashMap<String, One>,
    spikes: u64,
}

/// A spike: who, how many denials in how long, against which threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    pub principal: String,
    pub count: u32,
    pub window: Duration,
    pub threshold: u32,
}

pub struct Denials(Mutex<Inner>);

impl Default for Denials {
    fn default() -> Self {
        Denials(Mutex::new(Inner {
            threshold: DEFAULT_SPIKE_THRESHOLD,
            window: DEFAULT_SPIKE_WINDOW,
            by: HashMap::new(),
            spikes: 0,
        }))
    }
}

impl Denials {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn configure(&self, threshold: u32, window: Duration) {
        let mut i = self.lock();
        i.threshold = threshold.max(1);
        i.window = window;
    }

    /// Counts one denial of `principal`; the spike when this one crosses the threshold.
    pub fn record(&self, principal: &str) -> Option<Spike> {
        self.record_at(principal, Instant::now())
    }

    fn record_at(&self, principal: &str, now: Instant) -> Option<Spike> {
        let mut i = self.lock();
        let (threshold, window) = (i.threshold, i.window);
        let key = if i.by.contains_key(principal) || i.by.len() < MAX_PRINCIPALS {
            principal
        } else {
            OTHER
        };
        let one = i.by.entry(key.to_owned()).or_default();
        one.total += 1;
        one.recent.push_back(now);
        while one.recent.len() > threshold as usize {
            one.recent.pop_front();
        }
        while one
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            one.recent.pop_front();
        }
        let quiet = one.fired.is_none_or(|f| now.duration_since(f) >= window);
        if one.recent.len() >= threshold as usize && quiet {
            one.fired = Some(now);
            let count = one.recent.len() as u32;
            i.spikes += 1;
            return Some(Spike {
                principal: key.to_owned(),
                count,
                window,
                threshold,
            });
        }
        None
    }

    /// Denials of `principal` since start.
    pub fn total(&self, principal: &str) -> u64 {
        self.lock().by.get(principal).map_or(0, |o| o.total)
    }

    /// Every principal's denials since start, by name.
    pub fn totals(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .lock()
            .by
            .iter()
            .map(|(p, o)| (p.clone(), o.total))
            .collect();
        v.sort();
        v
    }

    /// Spike events raised since start.
    pub fn spikes(&self) -> u64 {
        self.lock().spikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spikes_need_the_threshold_within_the_window() {
        let d = Denials::default();
        d.configure(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Spread out: never three within 10 s.
        for s in [0, 6, 12, 18, 24] {
            assert_eq!(d.record_at("p", at(s)), None, "{s}");
        }
        assert!(d.record_at("p", at(25)).is_some(), "18, 24, 25");
        // Quiet for a window after a spike, then again.
        assert_eq!(d.record_at("p", at(26)), None);
        assert_eq!(d.record_at("p", at(30)), None);
        let s = d.record_at("p", at(35)).unwrap();
        assert_eq!((s.count, s.threshold), (3, 3));
        assert_eq!(d.total("p"), 9);
        assert_eq!(d.spikes(), 2);
    }

    #[test]
    fn principals_beyond_the_bound_share_one_label() {
        let d = Denials::default();
        for i in 0..MAX_PRINCIPALS + 5 {
            d.record(&format!("token:{i}"));
        }
        let t = d.totals();
        assert_eq!(t.len(), MAX_PRINCIPALS + 1);
        assert_eq!(d.total(OTHER), 5);
    }
}
