//! Wall-clock helpers: the server stamps messages in milliseconds since the
//! Unix epoch and shows them as RFC 3339 with milliseconds.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-29T10:00:00.123Z`
pub fn format_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
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
}
