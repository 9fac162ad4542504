//! Per-connection message rate limiting (a token bucket).

use std::time::Instant;

#[cfg(test)]
use std::time::Duration;

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Time until one token is available.
    #[cfg(test)]
    pub(crate) fn wait_time(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, t0);
        for _ in 0..5 {
            assert!(r.allow(t0));
        }
        assert!(!r.allow(t0));
        assert!(r.wait_time() > Duration::ZERO);
        // 100 ms later one token has been refilled.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.allow(t1));
        assert!(!r.allow(t1));
        // Tokens never exceed the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(r.allow(t2));
        }
        assert!(!r.allow(t2));
    }
}
