//! File descriptors (docs/operations.md, "File limits"): at start the soft
//! `RLIMIT_NOFILE` is raised to the hard limit (as the Go runtime does for
//! every program), and the cap on open connections is kept below what the
//! limit allows, so a connection past the cap gets a clean 503 and the
//! process never runs out of descriptors (EMFILE) instead.

use std::sync::OnceLock;

/// The limit as found and as left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit the process started with.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    pub hard: u64,
}

/// Descriptors kept back from connections: the store's files, the
/// listeners, the HTTP clients of the store and of a cluster's peers, logs,
/// and sockets being refused during a flood. An eighth of the limit, and
/// 32 more.
pub fn reserve(limit: u64) -> u64 {
    32 + limit / 8
}

/// Connections the limit allows besides the reserve (at least 1).
pub fn allowed(limit: u64) -> usize {
    limit.saturating_sub(reserve(limit)).max(1) as usize
}

/// Raises the soft limit to the hard one (at most 2^20, the kernel's
/// usual `nr_open`, when the hard limit is unlimited).
pub fn raise() -> std::io::Result<Limit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let soft_before: u64 = lim.rlim_cur;
    let hard: u64 = lim.rlim_max;
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        hard
    };
    if target > soft_before {
        let want = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit; only the soft limit changes, within the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(Limit {
                soft_before,
                soft: target,
                hard,
            });
        }
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            soft = soft_before,
            hard,
            "cannot raise the file descriptor limit"
        );
    }
    Ok(Limit {
        soft_before,
        soft: soft_before,
        hard,
    })
}

/// The connection cap to use for `wanted`: what the descriptor limit
/// allows at most. The limit is raised, and both numbers logged, once per
/// process.
pub fn cap(wanted: usize) -> usize {
    static LIMIT: OnceLock<Option<Limit>> = OnceLock::new();
    static LOGGED: OnceLock<()> = OnceLock::new();
    let Some(limit) = *LIMIT.get_or_init(|| match raise() {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file descriptor limit");
            None
        }
    }) else {
        return wanted;
    };
    let cap = wanted.min(allowed(limit.soft));
    LOGGED.get_or_init(|| {
        if cap < wanted {
            tracing::warn!(
                soft_before = limit.soft_before,
                soft = limit.soft,
                hard = limit.hard,
                reserve = reserve(limit.soft),
                max_connections = wanted,
                cap,
                "file descriptors: connections capped below --max-connections to fit the limit (raise the hard limit, e.g. LimitNOFILE= in systemd, to allow more)"
            );
        } else {
            tracing::info!(
                soft_before = limit.soft_before,
                soft = limit.soft,
                hard = limit.hard,
                reserve = reserve(limit.soft),
                max_connections = wanted,
                cap,
                "file descriptors: the limit allows --max-connections"
            );
        }
    });
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_reserve_that_grows_with_the_limit() {
        assert_eq!(reserve(1024), 160);
        assert_eq!(allowed(1024), 864);
        assert_eq!(allowed(128), 80);
        assert_eq!(allowed(65_536), 57_312);
        assert_eq!(allowed(10), 1, "never zero");
    }

    #[test]
    fn raising_never_lowers_the_soft_limit() {
        let l = raise().unwrap();
        assert!(l.soft >= l.soft_before);
        assert!(l.soft <= l.hard || l.hard == libc::RLIM_INFINITY);
    }
}
