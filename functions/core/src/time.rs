//! Wall-clock helpers: the server stamps messages in milliseconds since the
//! Unix epoch and shows them as RFC 3339 with milliseconds.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
