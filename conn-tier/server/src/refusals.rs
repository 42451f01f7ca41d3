//! Keeps refused-connection log lines bounded: at most one line per IP per
//! window (and a global cap), so an attacker cannot fill the logs with
//! failed attempts.

use chat_core::hash::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One log line per IP per `window`; at most `max_ips` IPs remembered.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    max_ips: usize,
    seen: Mutex<HashMap<Option<IpAddr>, Instant>>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(Duration::from_secs(10), 10_000)
    }
}

impl LogLimiter {
    pub fn new(window: Duration, max_ips: usize) -> Self {
        LogLimiter {
            window,
            max_ips,
            seen: Mutex::new(HashMap::default()),
        }
    }

    /// Whether a refusal from `ip` may be logged now.
    pub fn should_log(&self, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= self.max_ips {
            seen.retain(|_, at| now.duration_since(*at) < self.window);
            if seen.len() >= self.max_ips {
                return false;
            }
        }
        match seen.get(&ip) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                seen.insert(ip, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_ip_per_window_and_a_bounded_memory() {
        let l = LogLimiter::new(Duration::from_secs(60), 2);
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        let c = Some("10.0.0.3".parse().unwrap());
        assert!(l.should_log(a));
        assert!(!l.should_log(a));
        assert!(l.should_log(b));
        assert!(!l.should_log(c), "the table is full within the window");
    }
}
