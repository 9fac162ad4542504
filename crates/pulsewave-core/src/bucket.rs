//! A token bucket on the room's clock, for the rate limits of the media
//! and data paths (a few arithmetic operations per packet, no allocation).

use std::time::Instant;

/// Tokens refill at `rate` per second up to `capacity`; `take` spends them.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket refilling `rate` tokens per second, holding at most
    /// `capacity`.
    pub(crate) fn new(rate: f64, capacity: f64) -> Self {
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: None,
        }
    }

    /// Spends `amount` tokens at `now` if there are enough.
    pub(crate) fn take(&mut self, now: Instant, amount: f64) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        }
        self.last = Some(now);
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_the_rate_up_to_the_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0);
        assert!((0..20).all(|_| b.take(t0, 1.0)));
        assert!(!b.take(t0, 1.0));
        assert!(b.take(t0 + Duration::from_millis(100), 1.0));
        assert!(!b.take(t0 + Duration::from_millis(100), 1.0));
        // A long pause refills only up to the capacity.
        let later = t0 + Duration::from_secs(60);
        assert!((0..20).all(|_| b.take(later, 1.0)));
        assert!(!b.take(later, 1.0));
    }
}
