//! Wall-clock helpers: the server stamps messages in milliseconds since the
//! Unix epoch and shows them as RFC 3339 with milliseconds.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the Unix epoch, by this process's clock (see
/// [`skew_ms`], and [`set_clock`] for a simulation's).
pub fn now_ms() -> u64 {
    let real = CLOCK.get().and_then(|clock| clock()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    });
    match skew_ms() {
        0 => real,
        s => (real as i64).saturating_add(s).max(0) as u64,
    }
}

/// A simulation's wall clock, if one is set ([`set_clock`]).
static CLOCK: OnceLock<fn() -> Option<u64>> = OnceLock::new();

/// A test seam: from now on [`now_ms`] reads `clock`, where it answers
/// (`None`: the system clock). The cluster simulation (conn-tier/sim) sets
/// its simulated time here, which moves with the simulation's timers
/// rather than with the (much faster) real time: a heartbeat's value
/// must change between two beats. The first clock set stays.
pub fn set_clock(clock: fn() -> Option<u64>) {
    let _ = CLOCK.set(clock);
}

/// A test seam, off unless `CHAT_CLOCK_SKEW_FILE` names a file: then this
/// process's wall clock is off by the milliseconds the file holds (re-read
/// at most every 100 ms), as on a host whose clock jumps. Used by
/// `tests/tests/cluster.rs` (docs/testing.md) to jump one node's clock;
/// it moves what this crate stamps and compares (heartbeats, `sent_at`),
/// not the token library's own clock.
fn skew_ms() -> i64 {
    static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let Some(path) = FILE.get_or_init(|| std::env::var_os("CHAT_CLOCK_SKEW_FILE").map(Into::into))
    else {
        return 0;
    };
    static CACHE: Mutex<Option<(Instant, i64)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    match *cache {
        Some((at, skew)) if at.elapsed() < Duration::from_millis(100) => skew,
        _ => {
            let skew = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0);
            *cache = Some((Instant::now(), skew));
            skew
        }
    }
}

/// The last instant RFC 3339 can show: 9999-12-31T23:59:59.999Z.
const MAX_MS: u64 = 253_402_300_799_999;

/// `2026-11-29T10:00:00.123Z`. A time past the year 9999 (only a corrupt
/// record holds one) shows as the last one RFC 3339 can: formatting it
/// fails, and `to_string` would panic on that (found by the `dynamo_item`
/// fuzz target).
pub fn format_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.min(MAX_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_rfc3339_with_milliseconds() {
        assert_eq!(
            super::format_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn a_time_past_the_year_9999_shows_as_its_last_instant_not_a_panic() {
        assert_eq!(super::format_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(super::format_ms(super::MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(super::format_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
