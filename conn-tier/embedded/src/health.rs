//! Store faults as states (docs/operations.md, "Faults"): the database
//! handle can be closed and opened again without a restart, the store
//! knows whether it can write, and a watcher keeps an eye on the free disk
//! space.
//!
//! - A commit that fails (ENOSPC, EIO, a read-only remount) poisons the
//!   engine's handle (redb: "Previous I/O error occurred. Please close and
//!   re-open the database"; fjall: `Poisoned`). The writer marks the store not writable: writes are
//!   refused at once with `unavailable` (nothing is acked that is not
//!   stored); reads may fail too (redb refuses them after an I/O error),
//!   also as `unavailable`. The watcher asks the writer to try again at
//!   once when space is freed, else every 10 s: it closes the handle, opens
//!   the data again (each engine recovers to its last commit) and commits a small
//!   probe; once that succeeds the store is writable again.
//! - Below `min_free_bytes` of free space on the data directory's file
//!   system, writes are refused the same way, so the file is never left
//!   at the edge of a full disk.

use crate::kv::{Engine, EngineKind};
use chat_core::ports::StoreHealth;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The open engine, which the writer may close and open again.
pub(crate) struct Slot {
    kind: EngineKind,
    dir: PathBuf,
    engine: RwLock<Option<Arc<Engine>>>,
}

impl Slot {
    pub(crate) fn new(dir: PathBuf, engine: Engine) -> Self {
        Slot {
            kind: engine.kind(),
            dir,
            engine: RwLock::new(Some(Arc::new(engine))),
        }
    }

    /// The open engine; `None` while it is being opened again.
    pub(crate) fn get(&self) -> Option<Arc<Engine>> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Closes the engine (once the reads in flight are done with it) and
    /// opens its data again.
    pub(crate) fn reopen(&self) -> Result<(), String> {
        let old = self
            .engine
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(old) = old {
            // Readers hold a clone only for one read transaction.
            for _ in 0..5_000 {
                if Arc::strong_count(&old) == 1 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(old);
        }
        let engine = Engine::open(self.kind, &self.dir).map_err(|e| e.to_string())?;
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(engine));
        Ok(())
    }
}

/// Whether the store can write, and why not.
pub(crate) struct Health {
    /// The last commit failed and no probe has succeeded since.
    failed: Mutex<Option<String>>,
    /// Free space is below the threshold.
    low_disk: AtomicBool,
    free_bytes: AtomicU64,
    min_free_bytes: u64,
}

impl Health {
    pub(crate) fn new(min_free_bytes: u64) -> Self {
        Health {
            failed: Mutex::new(None),
            low_disk: AtomicBool::new(false),
            free_bytes: AtomicU64::new(u64::MAX),
            min_free_bytes,
        }
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A commit failed: not writable until a probe succeeds.
    pub(crate) fn fail(&self, why: &str) {
        let mut f = self.failed();
        if f.is_none() {
            tracing::error!(
                error = why,
                "the store cannot write; refusing writes until a probe write succeeds"
            );
            chat_core::metrics::store_writable(false);
        }
        *f = Some(why.to_string());
    }

    /// A probe write succeeded.
    pub(crate) fn recovered(&self) {
        if self.failed().take().is_some() {
            tracing::info!("the store can write again");
        }
        chat_core::metrics::store_writable(self.writable());
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed().is_some()
    }

    pub(crate) fn writable(&self) -> bool {
        !self.has_failed() && !self.low_disk.load(Ordering::Relaxed)
    }

    /// Records the free space seen; warns once when it drops below the
    /// threshold, and once when it is back.
    pub(crate) fn set_free(&self, free: u64) {
        self.free_bytes.store(free, Ordering::Relaxed);
        chat_core::metrics::store_free_bytes(free);
        let low = free < self.min_free_bytes;
        if self.low_disk.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = self.min_free_bytes,
                    "disk nearly full: refusing writes until there is room"
                );
            } else {
                tracing::info!(free_bytes = free, "disk space back: writes resume");
            }
            chat_core::metrics::store_writable(self.writable());
        }
    }

    /// Why writes are refused now, if they are.
    fn problem(&self) -> Option<String> {
        if let Some(why) = self.failed().as_ref() {
            return Some(format!("a write failed ({why})"));
        }
        if self.low_disk.load(Ordering::Relaxed) {
            return Some(format!(
                "the disk is nearly full ({} bytes free, below the {} kept free)",
                self.free_bytes.load(Ordering::Relaxed),
                self.min_free_bytes
            ));
        }
        None
    }

    /// `Ok` if writes may go ahead; else why not, for the caller.
    pub(crate) fn check(&self) -> Result<(), chat_core::Error> {
        match self.problem() {
            None => Ok(()),
            Some(why) => Err(chat_core::Error::Unavailable(format!(
                "the store cannot write: {why}"
            ))),
        }
    }

    pub(crate) fn report(&self) -> StoreHealth {
        let free = self.free_bytes.load(Ordering::Relaxed);
        StoreHealth {
            writable: self.writable(),
            problem: self.problem(),
            free_bytes: (free != u64::MAX).then_some(free),
        }
    }
}

/// While nothing changes on the disk, a store that cannot write tries again
/// every this many watch rounds (10 s at the default 1 s).
const RETRY_TICKS: u32 = 10;

/// Free bytes for an unprivileged writer on the file system of `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The watcher: every `every`, the free space, and while the store cannot
/// write, a nudge for the writer to try again (`nudge`). Stops when
/// `closing` is set.
pub(crate) fn watch(
    dir: PathBuf,
    health: Arc<Health>,
    nudge: impl Fn() + Send + 'static,
    closing: Arc<AtomicBool>,
    every: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("embedded-store-watch".into())
        .spawn(move || {
            let tick = Duration::from_millis(50);
            let mut waited = every;
            // Free space at the last nudge, and how many ticks since: a
            // store that cannot write tries again at once when space was
            // freed, else every `RETRY_TICKS` (opening a file that was not
            // closed cleanly repairs it: a full scan, not worth doing every
            // second while nothing changed).
            let mut last_nudge: Option<(u64, u32)> = None;
            while !closing.load(Ordering::Relaxed) {
                if waited >= every {
                    waited = Duration::ZERO;
                    let free = free_bytes(&dir);
                    if let Some(free) = free {
                        health.set_free(free);
                    }
                    chat_core::metrics::store_writable(health.writable());
                    if health.has_failed() {
                        let freed = |before: u64| free.is_some_and(|f| f > before + (1 << 20));
                        let due = match last_nudge {
                            None => true,
                            Some((before, ticks)) => freed(before) || ticks >= RETRY_TICKS,
                        };
                        if due {
                            nudge();
                            last_nudge = Some((free.unwrap_or(0), 0));
                        } else if let Some((_, ticks)) = last_nudge.as_mut() {
                            *ticks += 1;
                        }
                    } else {
                        last_nudge = None;
                    }
                }
                std::thread::sleep(tick);
                waited += tick;
            }
        })
}
