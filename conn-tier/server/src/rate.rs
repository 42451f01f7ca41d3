//! A token bucket: one per user, shared by the user's connections (the
//! hub keeps it); generous enough that a burst of 100 frames is never
//! limited.

use std::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimit {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl RateLimit {
    pub(crate) fn new(burst: u32, per_sec: u32) -> Self {
        RateLimit {
            tokens: burst as f64,
            burst: burst as f64,
            per_sec: per_sec as f64,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.at = now;
    }

    /// Whether the bucket has refilled completely: forgetting it then
    /// gives nobody a token they would not have had.
    pub(crate) fn is_full(&mut self) -> bool {
        self.refill();
        self.tokens >= self.burst
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self) -> bool {
        self.refill();
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
    use crate::limits::defaults;

    #[test]
    fn a_burst_of_100_frames_is_never_rate_limited() {
        let mut r = RateLimit::new(defaults::RATE_BURST, defaults::RATE_PER_SEC);
        assert!((0..100).all(|_| r.take()));
        let mut tight = RateLimit::new(3, 0);
        assert_eq!((0..5).filter(|_| tight.take()).count(), 3);
    }
}
