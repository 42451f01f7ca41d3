//! Backup and restore of `chat.redb` (docs/operations.md, "Backup and
//! restore").
//!
//! A backup is a new redb file with every row of every table, copied from
//! **one read transaction**: redb's MVCC snapshot of the last commit. So it
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
use crate::tables::*;
use redb::{
    Database, Key, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableError, Value,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Rows per transaction of the copy, each one durable (its own fsync).
///
/// Measured (`scripts/bench-backup`, 1M messages, sends at 2,000/s on the
/// same disk; docs/operations.md): with one fsync at the end, that flush
/// of ~285 MB held the server's commits back, send p99 56-59x its
/// baseline; with a durable commit every 20,000 rows 2.5-3.5x, every
/// 5,000 rows 1.9-2.7x, against 1.5-2.3x for a backup written to tmpfs
/// (no disk writes of its own at all). The backup takes about as long.
const CHUNK: u64 = 5_000;
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
    fn table<K: Key + 'static, V: Value + 'static>(
        &mut self,
        name: &'static str,
        def: TableDefinition<K, V>,
    ) -> Result<u64, Error>;
}

pub(crate) fn each_table(v: &mut impl EachTable) -> Result<Counts, Error> {
    Ok(Counts {
        messages: v.table("messages", MESSAGES)?,
        conversations: v.table("conversation_last_id", LAST_ID)?,
        idempotency: v.table("idempotency", IDEMPOTENCY)?,
        memberships: v.table("users", USERS)?,
        groups: v.table("groups", GROUPS)?,
        group_members: v.table("group_members", GROUP_MEMBERS)?,
        quotas: v.table("quotas", QUOTAS)?,
        devices: v.table("devices", DEVICES)?,
        cursors: v.table("cursors", CURSORS)?,
    })
}

/// Reads every row of a snapshot, hashing it and, with `to`, copying it.
pub(crate) struct Copier<'a> {
    pub src: &'a ReadTransaction,
    pub to: Option<&'a Database>,
    pub hash: Sha256,
    pub progress: &'a mut dyn FnMut(Progress<'_>),
    /// Asked between chunks: whether to give up (an online backup gives up
    /// when the store hits a fault, so it does not hold the file the store
    /// must open again).
    pub stop: &'a dyn Fn() -> bool,
}

impl EachTable for Copier<'_> {
    fn table<K: Key + 'static, V: Value + 'static>(
        &mut self,
        name: &'static str,
        def: TableDefinition<K, V>,
    ) -> Result<u64, Error> {
        self.hash.update(name.as_bytes());
        let table = match self.src.open_table(def) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(Error::db(e)),
        };
        let of = table.len().map_err(Error::db)?;
        let mut rows = table.iter().map_err(Error::db)?;
        let mut done = 0u64;
        loop {
            let txn = match self.to {
                Some(db) => {
                    // Durable (redb's default): small flushes, see CHUNK.
                    Some(db.begin_write().map_err(Error::db)?)
                }
                None => None,
            };
            let mut out = match &txn {
                Some(t) => Some(t.open_table(def).map_err(Error::db)?),
                None => None,
            };
            let mut in_chunk = 0;
            let mut finished = true;
            for row in rows.by_ref() {
                let (k, v) = row.map_err(Error::db)?;
                let (kv, vv) = (k.value(), v.value());
                {
                    let (kb, vb) = (K::as_bytes(&kv), V::as_bytes(&vv));
                    let (kb, vb) = (kb.as_ref(), vb.as_ref());
                    self.hash.update((kb.len() as u64).to_le_bytes());
                    self.hash.update(kb);
                    self.hash.update((vb.len() as u64).to_le_bytes());
                    self.hash.update(vb);
                }
                if let Some(out) = out.as_mut() {
                    out.insert(&kv, &vv).map_err(Error::db)?;
                }
                done += 1;
                in_chunk += 1;
                if in_chunk == CHUNK {
                    finished = false;
                    break;
                }
            }
            drop(out);
            if let Some(t) = txn {
                t.commit().map_err(Error::db)?;
            }
            (self.progress)(Progress {
                table: name,
                done,
                of,
            });
            if finished {
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

/// Copies the snapshot `src` to a new file `to` (refused if it exists),
/// through `to.partial`, renamed once complete and durable.
pub(crate) fn write(
    src: &ReadTransaction,
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
    src: &ReadTransaction,
    to: &Path,
    partial: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
    stop: &dyn Fn() -> bool,
) -> Result<BackupReport, Error> {
    let started = std::time::Instant::now();
    let taken_at_ms = chat_core::time::now_ms();
    let io = |context: String| move |source| Error::Io { context, source };
    let format = format_of(src)?;
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
    /// An online backup of this store to `to`: one read transaction, so
    /// writes go on meanwhile (and never wait for it). Blocking: run it on
    /// a thread of its own (`spawn_blocking`).
    pub fn backup(
        &self,
        to: &Path,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<BackupReport, Error> {
        let db = self
            .db
            .get()
            .ok_or_else(|| Error::Admin("the store is opening its file again: try again".into()))?;
        let txn = db.begin_read().map_err(Error::db)?;
        // Only a failed commit stops it (the store must open its file
        // again); a nearly full disk does not.
        write(&txn, to, progress, &|| self.health.has_failed())
    }
}

/// A backup of a stopped server's data directory. A file left by a crash
/// is recovered first, as a server start would.
pub fn backup_offline(
    data_dir: &Path,
    to: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BackupReport, Error> {
    let path = data_dir.join("chat.redb");
    if !path.exists() {
        return Err(Error::Admin(format!("no data file at {}", path.display())));
    }
    with_snapshot(&path, |txn| write(txn, to, progress, &|| false))
}

/// Runs `f` on one read transaction of a file no server holds: opened
/// read-only, or, if it needs recovering after a crash, opened (and so
/// recovered) as a server start would. A newer format is refused.
pub(crate) fn with_snapshot<R>(
    path: &Path,
    f: impl FnOnce(&ReadTransaction) -> Result<R, Error>,
) -> Result<R, Error> {
    match ReadOnlyDatabase::open(path) {
        Ok(db) => {
            refuse_newer(path, format::read(&db)?)?;
            let txn = db.begin_read().map_err(Error::db)?;
            f(&txn)
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
            f(&txn)
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
            fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
                &mut self,
                name: &'static str,
                _: redb::TableDefinition<K, V>,
            ) -> Result<u64, crate::Error> {
                self.0.push(name.to_string());
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
