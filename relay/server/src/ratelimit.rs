//! A sans-I/O token bucket for the optional per-client receive rate (reference §2.6).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` stored; starts full.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        TokenBucket {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens (going into debt) and returns how long the caller must wait before
    /// the debt is paid: `ZERO` if they were available.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes one token if available (for rate-limited notices that are skipped, not delayed).
    pub fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_delays_after_burst_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 2000, t0);
        assert_eq!(b.take(2000, t0), Duration::ZERO);
        let w = b.take(500, t0);
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-6, "{w:?}");
        // After the debt is paid and 1 s more, 1000 tokens are back.
        assert_eq!(
            b.take(1000, t0 + Duration::from_millis(1500)),
            Duration::ZERO
        );

        let mut n = TokenBucket::new(1, 3, t0);
        assert!(n.allow(t0) && n.allow(t0) && n.allow(t0));
        assert!(!n.allow(t0));
        assert!(n.allow(t0 + Duration::from_secs(1)));
    }
}
