//! A token bucket: `per_s` tokens a second, at most `burst` saved up, one taken per request.
//! Time is passed in (`now`), so the arithmetic is tested with a made-up clock.

use std::time::{Duration, Instant};

use bulkhead_core::config::rate_limits::Rate;

#[derive(Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket (a fresh tenant may spend its burst at once).
    pub fn new(rate: Rate, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate.burst as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        // A clock that went back (never with Instant) adds nothing.
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate.per_s as f64).min(self.rate.burst as f64);
        self.last = now;
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - self.tokens) / self.rate.per_s as f64,
        ))
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    let s = wait.as_secs_f64().ceil() as u32;
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            Rate {
                per_s: 5,
                burst: 10,
            },
            t0,
        );
        for i in 0..10 {
            assert!(b.take(t0).is_ok(), "token {i} of the burst");
        }
        let wait = b.take(t0).unwrap_err();
        assert_eq!(wait, ms(200), "one token every 1/5 s");
        assert_eq!(retry_after_secs(wait), 1);
        // 199 ms later: not yet; 200 ms: one token, and only one.
        assert!(b.take(t0 + ms(199)).is_err());
        assert!(b.take(t0 + ms(200)).is_ok());
        assert!(b.take(t0 + ms(200)).is_err());
        // A long pause refills to the burst, never beyond.
        let t1 = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(b.take(t1).is_ok());
        }
        assert!(b.take(t1).is_err());
    }

    #[test]
    fn slow_rates_give_a_retry_after_of_whole_seconds() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Rate { per_s: 1, burst: 1 }, t0);
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0 + ms(250)).unwrap_err();
        assert_eq!(wait, ms(750));
        assert_eq!(retry_after_secs(wait), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn a_refused_request_spends_nothing() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Rate { per_s: 2, burst: 1 }, t0);
        assert!(b.take(t0).is_ok());
        for k in 0..100 {
            assert!(b.take(t0 + ms(k)).is_err());
        }
        assert!(
            b.take(t0 + ms(500)).is_ok(),
            "refusals did not push the refill back"
        );
    }
}
