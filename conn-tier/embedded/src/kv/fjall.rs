//! The fjall engine: a directory holding an LSM tree, one keyspace per
//! [`Tbl`] and a `meta` keyspace (the format version, and which engine
//! wrote it). A group commit is one single-writer transaction, durable
//! when its journal write is fsynced (`PersistMode::SyncData`); the sorted
//! tables are written later, in the background, from memory.

use super::{dec, enc, Get, Shape, Tbl};
use crate::error::Error as StoreErr;
use crate::format::{FORMAT_KEY, FORMAT_VERSION};
use chat_core::Result;
use fjall::{
    KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace,
    SingleWriterWriteTx,
};
use std::ops::Bound;
use std::path::Path;

const META: &str = "meta";
/// What the meta keyspace says wrote the directory.
const ENGINE_KEY: &str = "engine";

pub(crate) struct FjallEngine {
    db: SingleWriterTxDatabase,
    meta: SingleWriterTxKeyspace,
    /// One per table, in [`Tbl::IDX`] order (shared with snapshots).
    keyspaces: std::sync::Arc<[SingleWriterTxKeyspace]>,
    probe: SingleWriterTxKeyspace,
}

fn fj(e: fjall::Error) -> chat_core::Error {
    StoreErr::Fjall(e).into()
}

impl FjallEngine {
    /// Opens (or creates) the data at `path`, as a server start does.
    pub(crate) fn open(path: &Path) -> std::result::Result<Self, StoreErr> {
        Self::open_as(path, false)
    }

    /// Opens data this server wrote (`conn-tier admin`): refused, and
    /// nothing added to it, if `path` holds none, or fjall data whose
    /// `meta` does not say this server wrote it. (Opening replays the
    /// journal, as a server start does.)
    pub(crate) fn open_existing(path: &Path) -> std::result::Result<Self, StoreErr> {
        Self::open_as(path, true)
    }

    fn open_as(path: &Path, existing: bool) -> std::result::Result<Self, StoreErr> {
        let not_ours = |why: &str| {
            StoreErr::Admin(format!(
                "{} is not a chat server's fjall data directory ({why})",
                path.display()
            ))
        };
        if existing && !path.join("version").is_file() {
            return Err(not_ours("it has no version file"));
        }
        let db = match SingleWriterTxDatabase::builder(path).open() {
            Ok(db) => db,
            Err(fjall::Error::Locked) => {
                return Err(StoreErr::Locked {
                    path: path.to_path_buf(),
                    detail: "fjall: the directory is locked".into(),
                })
            }
            Err(e) => return Err(StoreErr::Fjall(e)),
        };
        if existing && !db.keyspace_exists(META) {
            return Err(not_ours("no meta keyspace"));
        }
        let meta = db.keyspace(META, KeyspaceCreateOptions::default)?;
        match parse_format(meta.get(FORMAT_KEY)?)? {
            Some(found) if found > FORMAT_VERSION => {
                return Err(StoreErr::NewerFormat {
                    path: path.to_path_buf(),
                    found,
                })
            }
            Some(_)
                if existing && meta.get(ENGINE_KEY)?.as_deref() != Some(b"fjall".as_slice()) =>
            {
                return Err(not_ours("its meta does not name fjall"))
            }
            Some(_) => {}
            None if existing => return Err(not_ours("no format version recorded")),
            None => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION.to_string())?;
                meta.insert(ENGINE_KEY, "fjall")?;
                db.persist(PersistMode::SyncAll)?;
            }
        }
        let keyspaces = crate::tables::ALL
            .iter()
            .map(|name| db.keyspace(name, KeyspaceCreateOptions::default))
            .collect::<std::result::Result<_, _>>()?;
        let probe = db.keyspace("probe", KeyspaceCreateOptions::default)?;
        Ok(FjallEngine {
            db,
            meta,
            keyspaces,
            probe,
        })
    }

    pub(crate) fn begin(&self) -> SingleWriterWriteTx<'_> {
        self.db.write_tx().durability(Some(PersistMode::SyncData))
    }

    pub(crate) fn batch<'b>(&'b self, tx: &'b mut SingleWriterWriteTx<'_>) -> Batch<'b> {
        Batch {
            tx,
            keyspaces: &self.keyspaces,
            meta: &self.meta,
        }
    }

    pub(crate) fn snapshot(&self) -> Snap {
        Snap {
            snap: self.db.read_tx(),
            keyspaces: self.keyspaces.clone(),
            meta: self.meta.clone(),
        }
    }

    pub(crate) fn probe(&self) -> std::result::Result<(), String> {
        let mut tx = self.begin();
        tx.insert(
            &self.probe,
            "probe",
            chat_core::time::now_ms().to_be_bytes(),
        );
        tx.commit().map_err(|e| e.to_string())
    }
}

/// The writes of a transaction, erased of the lock's lifetime.
pub(crate) trait Tx {
    fn get(&self, ks: &SingleWriterTxKeyspace, k: &[u8]) -> fjall::Result<Option<fjall::Slice>>;
    fn range(
        &self,
        ks: &SingleWriterTxKeyspace,
        r: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> fjall::Iter;
    fn insert(&mut self, ks: &SingleWriterTxKeyspace, k: Vec<u8>, v: Vec<u8>);
    fn remove(&mut self, ks: &SingleWriterTxKeyspace, k: Vec<u8>);
}

impl Tx for SingleWriterWriteTx<'_> {
    fn get(&self, ks: &SingleWriterTxKeyspace, k: &[u8]) -> fjall::Result<Option<fjall::Slice>> {
        Readable::get(self, ks, k)
    }
    fn range(
        &self,
        ks: &SingleWriterTxKeyspace,
        r: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> fjall::Iter {
        Readable::range::<Vec<u8>, _>(self, ks, r)
    }
    fn insert(&mut self, ks: &SingleWriterTxKeyspace, k: Vec<u8>, v: Vec<u8>) {
        SingleWriterWriteTx::insert(self, ks, k, v)
    }
    fn remove(&mut self, ks: &SingleWriterTxKeyspace, k: Vec<u8>) {
        SingleWriterWriteTx::remove(self, ks, k)
    }
}

/// The tables of one write transaction.
pub(crate) struct Batch<'b> {
    tx: &'b mut (dyn Tx + 'b),
    keyspaces: &'b [SingleWriterTxKeyspace],
    meta: &'b SingleWriterTxKeyspace,
}

impl Batch<'_> {
    pub(crate) fn put<T: Tbl>(&mut self, k: &T::K, v: &T::V) -> Result<()> {
        self.tx.insert(&self.keyspaces[T::IDX], enc(k), enc(v));
        Ok(())
    }

    pub(crate) fn del<T: Tbl>(&mut self, k: &T::K) -> Result<()> {
        self.tx.remove(&self.keyspaces[T::IDX], enc(k));
        Ok(())
    }

    pub(crate) fn put_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.tx.insert(
            self.meta,
            key.as_bytes().to_vec(),
            value.as_bytes().to_vec(),
        );
        Ok(())
    }
}

fn bounds<K: Shape>(lo: Bound<&K>, hi: Bound<&K>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (lo.map(|k| enc(k)), hi.map(|k| enc(k)))
}

/// Visits `rows` (ascending, or descending if `rev`) while `f` says so.
fn visit<T: Tbl>(
    rows: fjall::Iter,
    rev: bool,
    mut f: impl FnMut(T::K, T::V) -> Result<bool>,
) -> Result<()> {
    super::drive(rows, rev, |g| {
        let (k, v) = g.into_inner().map_err(fj)?;
        f(dec(&k)?, dec(&v)?)
    })
}

impl Get for Batch<'_> {
    fn get<T: Tbl>(&mut self, k: &T::K) -> Result<Option<T::V>> {
        decoded(self.tx.get(&self.keyspaces[T::IDX], &enc(k)).map_err(fj)?)
    }

    fn scan<T: Tbl>(
        &mut self,
        lo: Bound<&T::K>,
        hi: Bound<&T::K>,
        rev: bool,
        f: impl FnMut(T::K, T::V) -> Result<bool>,
    ) -> Result<()> {
        let rows = self.tx.range(&self.keyspaces[T::IDX], bounds(lo, hi));
        visit::<T>(rows, rev, f)
    }
}

/// A recorded format version, if any.
fn parse_format(v: Option<fjall::Slice>) -> std::result::Result<Option<u64>, StoreErr> {
    let Some(v) = v else {
        return Ok(None);
    };
    std::str::from_utf8(&v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| StoreErr::Corrupt("the format version is not a number".into()))
}

/// A value read back as its shape.
fn decoded<V: Shape>(v: Option<fjall::Slice>) -> Result<Option<V>> {
    v.map(|v| dec(&v)).transpose()
}

/// A read snapshot.
pub(crate) struct Snap {
    snap: fjall::Snapshot,
    keyspaces: std::sync::Arc<[SingleWriterTxKeyspace]>,
    meta: SingleWriterTxKeyspace,
}

impl Snap {
    /// The rows of `T`, counted (a pass over the table).
    pub(crate) fn len<T: Tbl>(&self) -> Result<u64> {
        Ok(self.snap.len(&self.keyspaces[T::IDX]).map_err(fj)? as u64)
    }

    /// About the rows of `T` (fjall's estimate), for progress reports.
    pub(crate) fn len_hint<T: Tbl>(&self) -> u64 {
        self.keyspaces[T::IDX].approximate_len() as u64
    }

    pub(crate) fn meta(&mut self, key: &str) -> std::result::Result<Option<String>, StoreErr> {
        Ok(self
            .snap
            .get(&self.meta, key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The format version the snapshot's `meta` records.
    pub(crate) fn format(&self) -> std::result::Result<u64, StoreErr> {
        Ok(parse_format(self.snap.get(&self.meta, FORMAT_KEY)?)?.unwrap_or(FORMAT_VERSION))
    }
}

impl Get for Snap {
    fn get<T: Tbl>(&mut self, k: &T::K) -> Result<Option<T::V>> {
        decoded(self.snap.get(&self.keyspaces[T::IDX], enc(k)).map_err(fj)?)
    }

    fn scan<T: Tbl>(
        &mut self,
        lo: Bound<&T::K>,
        hi: Bound<&T::K>,
        rev: bool,
        f: impl FnMut(T::K, T::V) -> Result<bool>,
    ) -> Result<()> {
        let rows = self
            .snap
            .range::<Vec<u8>, _>(&self.keyspaces[T::IDX], bounds(lo, hi));
        visit::<T>(rows, rev, f)
    }
}
