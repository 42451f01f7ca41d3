//! Backup and restore of `chat.redb` (docs/operations.md, "Backup and
//! restore").
//!
//! A backup is a new redb file with every row of every table, copied from
//! **one snapshot** of the last commit (redb's MVCC read transaction, or
//! fjall's snapshot: a backup of either engine is a redb file). So it
//! holds every write committed (and so every message acked) before it
//! started, and no part of a group commit that was not. A running server
//! takes it from its own open database (through its admin socket:
//! `conn-tier admin backup`); a stopped server's file is opened here.
//!
//! The copy is hashed as it goes: SHA-256 over every table's rows in key
//! order (the table's name, then each key and value with its length). The
//! hash is recorded in the backup's `meta` table with the format version
//! and the row counts; [`crate::verify`] computes it again.

use crate::error::Error;
use crate::format::{self, META};
use crate::kv::{FjallEngine, Get, Shape, Snap, Tbl};
use crate::tables::*;
use crate::EngineKind;
use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, TableError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// Rows per transaction of the copy, each one durable (its own fsync).
///
/// Measured (`scripts/bench-backup`, 1M messages, sends at 2,000/s on the
/// same disk; docs/operations.md): with one fsync at the end, that flush
/// of ~285 MB held the server's commits back, send p99 56-59x its
/// baseline; with a durable commit every 20,000 rows 2.5-3.5x, every
/// 5,000 rows 1.9-2.7x, against 1.5-2.3x for a backup written to tmpfs
/// (no disk writes of its own at all). The backup takes about as long.
const CHUNK: usize = 5_000;
/// `meta` keys a backup adds.
pub(crate) const HASH_KEY: &str = "backup.hash";
pub(crate) const TAKEN_KEY: &str = "backup.taken_at_ms";
pub(crate) const COUNTS_KEY: &str = "backup.counts";

/// Rows per table: what a backup holds, and what `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub messages: u64,
    /// Conversations with an id counter.
    pub conversations: u64,
    pub idempotency: u64,
    /// Membership rows (user, conversation), with their watermarks.
    pub memberships: u64,
    pub groups: u64,
    pub group_members: u64,
    pub quotas: u64,
    pub devices: u64,
    pub cursors: u64,
}

/// How far a long copy (or check) is: rows of `table` done, of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress<'a> {
    pub table: &'a str,
    pub done: u64,
    pub of: u64,
}

/// What a finished backup wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    /// The file's size.
    pub bytes: u64,
    /// The content hash (hex SHA-256), recorded in the file.
    pub hash: String,
    pub format: u64,
    pub counts: Counts,
    /// When the snapshot was taken (ms since the epoch).
    pub taken_at_ms: u64,
    pub seconds: f64,
}

/// Visits every data table (never `meta` or the health probe's), in one
/// fixed order: the order of the hash.
pub(crate) trait EachTable {
    fn table<T: Tbl>(&mut self) -> Result<u64, Error>;
}

pub(crate) fn each_table(v: &mut impl EachTable) -> Result<Counts, Error> {
    Ok(Counts {
        messages: v.table::<Messages>()?,
        conversations: v.table::<LastId>()?,
        idempotency: v.table::<Idempotency>()?,
        memberships: v.table::<Users>()?,
        groups: v.table::<Groups>()?,
        group_members: v.table::<GroupMembers>()?,
        quotas: v.table::<Quotas>()?,
        devices: v.table::<Devices>()?,
        cursors: v.table::<Cursors>()?,
    })
}

/// Reads every row of a snapshot (of either engine), hashing it and, with
/// `to`, copying it into a redb file.
pub(crate) struct Copier<'a> {
    pub src: &'a mut Snap,
    pub to: Option<&'a Database>,
    pub hash: Sha256,
    pub progress: &'a mut dyn FnMut(Progress<'_>),
    /// Asked between chunks: whether to give up (an online backup gives up
    /// when the store hits a fault, so it does not hold the data the store
    /// must open again).
    pub stop: &'a dyn Fn() -> bool,
}

impl EachTable for Copier<'_> {
    fn table<T: Tbl>(&mut self) -> Result<u64, Error> {
        self.hash.update(T::NAME.as_bytes());
        let of = self.src.len_hint::<T>().map_err(read_failed)?;
        let mut done = 0u64;
        let mut after: Option<T::K> = None;
        loop {
            let rows = chunk::<T>(self.src, after.as_ref(), CHUNK).map_err(read_failed)?;
            for (k, v) in &rows {
                // redb's encoding of the typed row, whatever the engine:
                // a backup of either hashes alike.
                let (kr, vr) = (k.to_r(), v.to_r());
                let kb = <<T::K as Shape>::R as redb::Value>::as_bytes(&kr);
                let vb = <<T::V as Shape>::R as redb::Value>::as_bytes(&vr);
                let (kb, vb): (&[u8], &[u8]) = (kb.as_ref(), vb.as_ref());
                self.hash.update((kb.len() as u64).to_le_bytes());
                self.hash.update(kb);
                self.hash.update((vb.len() as u64).to_le_bytes());
                self.hash.update(vb);
            }
            if let Some(db) = self.to {
                // Durable (redb's default): small flushes, see CHUNK.
                let txn = db.begin_write().map_err(Error::db)?;
                {
                    let mut out = txn.open_table(T::def()).map_err(Error::db)?;
                    for (k, v) in &rows {
                        out.insert(k.to_r(), v.to_r()).map_err(Error::db)?;
                    }
                }
                txn.commit().map_err(Error::db)?;
            }
            done += rows.len() as u64;
            (self.progress)(Progress {
                table: T::NAME,
                done,
                of: of.max(done),
            });
            let finished = rows.len() < CHUNK;
            after = rows.into_iter().last().map(|(k, _)| k);
            if finished || after.is_none() {
                return Ok(done);
            }
            if (self.stop)() {
                return Err(Error::Admin(
                    "the store hit a fault during the backup, which was abandoned: try again once /readyz answers".into(),
                ));
            }
        }
    }
}

/// Up to `n` rows of `T` after the key `after` (from the first if none).
pub(crate) fn chunk<T: Tbl>(
    src: &mut impl Get,
    after: Option<&T::K>,
    n: usize,
) -> chat_core::Result<Vec<(T::K, T::V)>> {
    let lo = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut rows = Vec::new();
    src.scan::<T>(lo, Bound::Unbounded, false, |k, v| {
        rows.push((k, v));
        Ok(rows.len() < n)
    })?;
    Ok(rows)
}

/// Visits every row of `T`, a chunk at a time, so `f` may read the
/// snapshot too.
pub(crate) fn each<T: Tbl>(
    snap: &mut Snap,
    mut f: impl FnMut(&mut Snap, T::K, T::V) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut after: Option<T::K> = None;
    loop {
        let rows = chunk::<T>(snap, after.as_ref(), CHUNK).map_err(read_failed)?;
        let n = rows.len();
        for (k, v) in rows {
            after = Some(k.clone());
            f(snap, k, v)?;
        }
        if n < CHUNK {
            return Ok(());
        }
    }
}

/// A read failure of a snapshot, as `admin` reports it.
pub(crate) fn read_failed(e: chat_core::Error) -> Error {
    Error::Admin(format!("reading the data: {e}"))
}

/// Copies the snapshot `src` to a new file `to` (refused if it exists),
/// through `to.partial`, renamed once complete and durable.
pub(crate) fn write(
    src: &mut Snap,
    to: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
    stop: &dyn Fn() -> bool,
) -> Result<BackupReport, Error> {
    if to.exists() {
        return Err(Error::Admin(format!(
            "{} exists: a backup never overwrites a file; choose another name",
            to.display()
        )));
    }
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    if partial.exists() {
        return Err(Error::Admin(format!(
            "{} exists: a backup to this name is running, or one was cut short (then remove it)",
            partial.display()
        )));
    }
    let result = copy(src, to, &partial, progress, stop);
    if result.is_err() {
        // Never a half-written backup left behind.
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The copy itself, into `partial`, then put in place as `to`.
fn copy(
    src: &mut Snap,
    to: &Path,
    partial: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
    stop: &dyn Fn() -> bool,
) -> Result<BackupReport, Error> {
    let started = std::time::Instant::now();
    let taken_at_ms = chat_core::time::now_ms();
    let io = |context: String| move |source| Error::Io { context, source };
    let format = src.format()?;
    let dst = Database::create(partial).map_err(Error::db)?;
    let mut copier = Copier {
        src,
        to: Some(&dst),
        hash: Sha256::new(),
        progress,
        stop,
    };
    let counts = each_table(&mut copier)?;
    let hash = hex::encode(copier.hash.finalize());
    let txn = dst.begin_write().map_err(Error::db)?;
    {
        let mut meta = txn.open_table(META).map_err(Error::db)?;
        let counts_json = serde_json::to_string(&counts).unwrap_or_default();
        for (k, v) in [
            (format::FORMAT_KEY, format.to_string()),
            (HASH_KEY, hash.clone()),
            (TAKEN_KEY, taken_at_ms.to_string()),
            (COUNTS_KEY, counts_json),
        ] {
            meta.insert(k, v.as_str()).map_err(Error::db)?;
        }
    }
    // Durable, like every chunk before it.
    txn.commit().map_err(Error::db)?;
    drop(dst);
    // A link fails if `to` appeared meanwhile: never overwritten. Where
    // the file system has no links (vfat, some network shares): a rename
    // after a last look.
    match std::fs::hard_link(partial, to) {
        Ok(()) => {
            let _ = std::fs::remove_file(partial);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Admin(format!(
                "{} exists: a backup never overwrites a file; choose another name",
                to.display()
            )))
        }
        Err(_) if !to.exists() => {
            std::fs::rename(partial, to).map_err(io(format!("renaming {}", partial.display())))?
        }
        Err(source) => {
            return Err(Error::Io {
                context: format!("linking {} to {}", partial.display(), to.display()),
                source,
            })
        }
    }
    sync_dir(to)?;
    let bytes = std::fs::metadata(to)
        .map_err(io(format!("reading {}", to.display())))?
        .len();
    Ok(BackupReport {
        path: to.to_path_buf(),
        bytes,
        hash,
        format,
        counts,
        taken_at_ms,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The format version a snapshot records (this build's if none: the store
/// records it at open).
pub(crate) fn format_of(txn: &ReadTransaction) -> Result<u64, Error> {
    match txn.open_table(META) {
        Ok(meta) => match meta.get(format::FORMAT_KEY).map_err(Error::db)? {
            Some(v) => v
                .value()
                .parse()
                .map_err(|_| Error::Corrupt(format!("format version {:?}", v.value()))),
            None => Ok(format::FORMAT_VERSION),
        },
        Err(TableError::TableDoesNotExist(_)) => Ok(format::FORMAT_VERSION),
        Err(e) => Err(Error::db(e)),
    }
}

/// Makes a rename in `file`'s directory durable.
pub(crate) fn sync_dir(file: &Path) -> Result<(), Error> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            context: format!("syncing directory {}", dir.display()),
            source,
        })
}

impl crate::EmbeddedStore {
    /// An online backup of this store to `to`: one snapshot, so writes go
    /// on meanwhile (and never wait for it). Blocking: run it on a thread
    /// of its own (`spawn_blocking`).
    pub fn backup(
        &self,
        to: &Path,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<BackupReport, Error> {
        let engine = self
            .db
            .get()
            .ok_or_else(|| Error::Admin("the store is opening its data again: try again".into()))?;
        let mut snap = engine.snapshot()?;
        // Only a failed commit stops it (the store must open its data
        // again); a nearly full disk does not.
        write(&mut snap, to, progress, &|| self.health.has_failed())
    }
}

/// A backup of a stopped server's data directory (either engine's). Data
/// left by a crash is recovered first, as a server start would.
pub fn backup_offline(
    data_dir: &Path,
    to: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BackupReport, Error> {
    let Some(kind) = EngineKind::found_in(data_dir).map_err(Error::Admin)? else {
        return Err(Error::Admin(format!(
            "no data in {} (neither chat.redb nor chat.fjall)",
            data_dir.display()
        )));
    };
    with_snapshot(&data_dir.join(kind.data_name()), |snap| {
        write(snap, to, progress, &|| false)
    })
}

/// Runs `f` on one snapshot of data no server holds: a redb file (a data
/// file or a backup) or a fjall data directory. A redb file is opened
/// read-only or, if it needs recovering after a crash, opened (and so
/// recovered) as a server start would. A newer format is refused.
pub(crate) fn with_snapshot<R>(
    path: &Path,
    f: impl FnOnce(&mut Snap) -> Result<R, Error>,
) -> Result<R, Error> {
    if path.is_dir() {
        let engine = match FjallEngine::open_existing(path) {
            Ok(e) => e,
            Err(Error::Locked { .. }) => return Err(in_use(path)),
            Err(e) => return Err(e),
        };
        let mut snap = Snap::Fjall(engine.snapshot());
        return f(&mut snap);
    }
    let snap = |txn| Snap::Redb(crate::kv::redb::Snap::new(txn));
    match ReadOnlyDatabase::open(path) {
        Ok(db) => {
            refuse_newer(path, format::read(&db)?)?;
            let txn = db.begin_read().map_err(Error::db)?;
            f(&mut snap(txn))
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(in_use(path)),
        Err(_) => {
            let db = match Database::open(path) {
                Ok(db) => db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(in_use(path)),
                Err(e) => {
                    return Err(Error::Admin(format!(
                        "{} cannot be read: {e}",
                        path.display()
                    )))
                }
            };
            refuse_newer(path, format::read(&db)?)?;
            let txn = db.begin_read().map_err(Error::db)?;
            f(&mut snap(txn))
        }
    }
}

fn refuse_newer(path: &Path, found: Option<u64>) -> Result<(), Error> {
    match found {
        Some(found) if found > format::FORMAT_VERSION => Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found,
        }),
        _ => Ok(()),
    }
}

pub(crate) fn in_use(path: &Path) -> Error {
    Error::Admin(format!(
        "{} is in use by a running chat server: back it up through that server (conn-tier admin backup --data-dir …, which uses its admin socket), or stop it first",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableHandle};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_copies_every_table_the_store_keeps() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::EmbeddedStore::open(dir.path()).unwrap());
        let db = redb::ReadOnlyDatabase::open(dir.path().join("chat.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let mut kept: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .filter(|n| n != "meta" && n != "probe")
            .collect();
        kept.sort();
        struct Names(Vec<String>);
        impl super::EachTable for Names {
            fn table<T: crate::kv::Tbl>(&mut self) -> Result<u64, crate::Error> {
                self.0.push(T::NAME.to_string());
                Ok(0)
            }
        }
        let mut names = Names(Vec::new());
        super::each_table(&mut names).unwrap();
        let mut copied = names.0;
        copied.sort();
        assert_eq!(kept, copied);
    }
}
