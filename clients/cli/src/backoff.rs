//! Reconnect delays: 1 s doubling up to 30 s, with equal jitter (uniform in
//! the upper half of the step, so clients spread out but never come back
//! sooner than half a step). Close code 1012 (the node is restarting) comes
//! back at once. The jitter source is injectable: [`ClockJitter`] in the
//! client, fixed values in tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first step.
pub const BASE: Duration = Duration::from_secs(1);
/// No wait is longer.
pub const CAP: Duration = Duration::from_secs(30);
/// After close code 1012, reconnect within this (spread, not a stampede).
pub const RESTART_SPREAD: Duration = Duration::from_millis(250);
/// A connection that stayed up this long starts the schedule over.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Close code "service restart": the node is restarting, come back at once.
pub const CLOSE_RESTART: u16 = 1012;

/// A source of jitter: numbers in `[0, 1)`.
pub trait Jitter {
    fn unit(&mut self) -> f64;
}

/// Jitter without a random crate: a splitmix64 sequence seeded with the
/// clock and the process id.
pub struct ClockJitter {
    state: u64,
}

impl ClockJitter {
    pub fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        ClockJitter {
            state: nanos ^ (u64::from(std::process::id()) << 32),
        }
    }
}

impl Jitter for ClockJitter {
    fn unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a fraction: exactly representable, below 1.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The step for the `attempt`-th consecutive failure (0-based):
/// `min(CAP, BASE * 2^attempt)`.
pub fn ceiling(attempt: u32) -> Duration {
    BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP)
}

/// Equal jitter: `ceiling/2 + unit * ceiling/2`, so within
/// `[ceiling/2, ceiling]`; a `unit` outside `[0, 1]` is clamped.
pub fn delay(attempt: u32, unit: f64) -> Duration {
    let half = ceiling(attempt) / 2;
    half + half.mul_f64(clamp_unit(unit))
}

fn clamp_unit(unit: f64) -> f64 {
    if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    }
}

/// The reconnect schedule of one client.
pub struct Backoff<J: Jitter> {
    attempt: u32,
    jitter: J,
}

impl<J: Jitter> Backoff<J> {
    pub fn new(jitter: J) -> Self {
        Backoff { attempt: 0, jitter }
    }

    /// How long to wait before the next attempt, after a connection closed
    /// with `close_code` (`None`: it dropped, or an attempt failed).
    pub fn after(&mut self, close_code: Option<u16>) -> Duration {
        if close_code == Some(CLOSE_RESTART) {
            return RESTART_SPREAD.mul_f64(clamp_unit(self.jitter.unit()));
        }
        let wait = delay(self.attempt, self.jitter.unit());
        self.attempt = self.attempt.saturating_add(1);
        wait
    }

    /// A connection stayed up: the next failure waits one step again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the same jitter.
    struct Fixed(f64);

    impl Jitter for Fixed {
        fn unit(&mut self) -> f64 {
            self.0
        }
    }

    fn schedule(unit: f64, n: usize) -> Vec<Duration> {
        let mut b = Backoff::new(Fixed(unit));
        (0..n).map(|_| b.after(None)).collect()
    }

    fn secs(s: &[f64]) -> Vec<Duration> {
        s.iter().map(|&x| Duration::from_secs_f64(x)).collect()
    }

    #[test]
    fn doubles_from_one_second_and_caps_at_thirty() {
        assert_eq!(
            schedule(1.0, 8),
            secs(&[1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        );
        assert_eq!(
            schedule(0.0, 8),
            secs(&[0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0])
        );
        // Bounded however long it fails.
        let mut b = Backoff::new(Fixed(1.0));
        for _ in 0..1000 {
            assert!(b.after(None) <= CAP);
        }
    }

    #[test]
    fn jitter_stays_within_the_step() {
        for attempt in 0..40 {
            let c = ceiling(attempt);
            for unit in [0.0, 0.1, 0.5, 0.999, 1.0, -3.0, 7.0, f64::NAN] {
                let d = delay(attempt, unit);
                assert!(d >= c / 2 && d <= c, "attempt {attempt} unit {unit}: {d:?}");
            }
        }
    }

    #[test]
    fn restart_comes_back_at_once_and_keeps_the_step() {
        let mut b = Backoff::new(Fixed(0.5));
        assert_eq!(b.after(None), Duration::from_millis(750));
        assert!(b.after(Some(CLOSE_RESTART)) <= RESTART_SPREAD);
        assert_eq!(b.after(Some(1008)), Duration::from_millis(1500));
        b.reset();
        assert_eq!(b.after(Some(1001)), Duration::from_millis(750));
    }

    #[test]
    fn clock_jitter_is_a_unit_fraction_and_varies() {
        let mut j = ClockJitter::from_clock();
        let draws: Vec<f64> = (0..1000).map(|_| j.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let low = draws.iter().filter(|&&u| u < 0.5).count();
        assert!((300..700).contains(&low), "{low} of 1000 below 0.5");
    }
}
