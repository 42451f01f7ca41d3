//! The redb engine: one file, one typed table per [`Tbl`] (the tables of
//! format 1). A transaction opens each table once, on its first use, and
//! keeps it until it ends: opening and closing a table was about a
//! seventh of the writer thread's time when every write opened its own
//! (docs/benchmarks.md, "The store's writer"); redb allows one open handle
//! per table in a write transaction, so every write of a batch uses it.

use super::{Get, Shape, Tbl};
use crate::error::Error as StoreErr;
use crate::format::META;
use crate::tables::db;
use chat_core::Result;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use std::ops::Bound;
use std::path::Path;

pub(crate) use crate::tables::{ReadSlots, WriteSlots};

/// A table of a write transaction.
pub(crate) type WTable<'t, T> =
    redb::Table<'t, <<T as Tbl>::K as Shape>::R, <<T as Tbl>::V as Shape>::R>;
/// A table of a read transaction.
pub(crate) type RTable<T> =
    redb::ReadOnlyTable<<<T as Tbl>::K as Shape>::R, <<T as Tbl>::V as Shape>::R>;

pub(crate) struct RedbEngine {
    db: Database,
}

/// Probe writes go here: one row, overwritten.
const PROBE: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("probe");

impl RedbEngine {
    pub(crate) fn open(path: &Path) -> std::result::Result<Self, StoreErr> {
        // A file of a newer format is refused before it is opened for
        // writing (which writes to it).
        if path.exists() {
            if let Ok(db) = redb::ReadOnlyDatabase::open(path) {
                if let Some(found) = crate::format::read(&db)? {
                    if found > crate::FORMAT_VERSION {
                        return Err(StoreErr::NewerFormat {
                            path: path.to_path_buf(),
                            found,
                        });
                    }
                }
            }
        }
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreErr::Locked {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })
            }
            Err(e) => return Err(StoreErr::db(e)),
        };
        crate::format::check_and_record(&db, path)?;
        // Every table exists from the start, so reads never miss one.
        let txn = db.begin_write().map_err(StoreErr::db)?;
        crate::tables::create_all(&txn)?;
        txn.open_table(PROBE).map_err(StoreErr::db)?;
        txn.commit().map_err(StoreErr::db)?;
        Ok(RedbEngine { db })
    }

    pub(crate) fn begin(&self) -> std::result::Result<WriteTransaction, String> {
        self.db.begin_write().map_err(|e| e.to_string())
    }

    pub(crate) fn snapshot(&self) -> std::result::Result<Snap, StoreErr> {
        Ok(Snap::new(self.db.begin_read().map_err(StoreErr::db)?))
    }

    pub(crate) fn probe(&self) -> std::result::Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut t = txn.open_table(PROBE).map_err(|e| e.to_string())?;
            t.insert("probe", chat_core::time::now_ms())
                .map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

/// The tables of one write transaction, opened lazily.
pub(crate) struct Batch<'t> {
    txn: &'t WriteTransaction,
    slots: WriteSlots<'t>,
}

impl<'t> Batch<'t> {
    pub(crate) fn new(txn: &'t WriteTransaction) -> Self {
        Batch {
            txn,
            slots: WriteSlots::default(),
        }
    }

    fn table<T: Tbl>(&mut self) -> Result<&mut WTable<'t, T>> {
        let slot = T::write_slot(&mut self.slots);
        Ok(match slot {
            Some(t) => t,
            None => slot.insert(self.txn.open_table(T::def()).map_err(db)?),
        })
    }

    pub(crate) fn put<T: Tbl>(&mut self, k: &T::K, v: &T::V) -> Result<()> {
        self.table::<T>()?.insert(k.to_r(), v.to_r()).map_err(db)?;
        Ok(())
    }

    pub(crate) fn del<T: Tbl>(&mut self, k: &T::K) -> Result<()> {
        self.table::<T>()?.remove(k.to_r()).map_err(db)?;
        Ok(())
    }

    pub(crate) fn put_meta(&mut self, key: &str, value: &str) -> Result<()> {
        let mut meta = self.txn.open_table(META).map_err(db)?;
        meta.insert(key, value).map_err(db)?;
        Ok(())
    }
}

fn get<T: Tbl>(
    t: &impl ReadableTable<<T::K as Shape>::R, <T::V as Shape>::R>,
    k: &T::K,
) -> Result<Option<T::V>> {
    Ok(t.get(k.to_r())
        .map_err(db)?
        .map(|g| T::V::from_r(g.value())))
}

fn scan<T: Tbl>(
    t: &impl ReadableTable<<T::K as Shape>::R, <T::V as Shape>::R>,
    lo: Bound<&T::K>,
    hi: Bound<&T::K>,
    rev: bool,
    mut f: impl FnMut(T::K, T::V) -> Result<bool>,
) -> Result<()> {
    let range = t
        .range::<<<T::K as Shape>::R as redb::Value>::SelfType<'_>>((
            lo.map(|k| k.to_r()),
            hi.map(|k| k.to_r()),
        ))
        .map_err(db)?;
    super::drive(range, rev, |row| {
        let (k, v) = row.map_err(db)?;
        f(T::K::from_r(k.value()), T::V::from_r(v.value()))
    })
}

impl Get for Batch<'_> {
    fn get<T: Tbl>(&mut self, k: &T::K) -> Result<Option<T::V>> {
        get::<T>(self.table::<T>()?, k)
    }

    fn scan<T: Tbl>(
        &mut self,
        lo: Bound<&T::K>,
        hi: Bound<&T::K>,
        rev: bool,
        f: impl FnMut(T::K, T::V) -> Result<bool>,
    ) -> Result<()> {
        scan::<T>(self.table::<T>()?, lo, hi, rev, f)
    }
}

/// A read transaction, its tables opened lazily.
pub(crate) struct Snap {
    txn: ReadTransaction,
    slots: ReadSlots,
}

impl Snap {
    pub(crate) fn new(txn: ReadTransaction) -> Self {
        Snap {
            txn,
            slots: ReadSlots::default(),
        }
    }

    pub(crate) fn txn(&self) -> &ReadTransaction {
        &self.txn
    }

    pub(crate) fn meta(&mut self, key: &str) -> std::result::Result<Option<String>, StoreErr> {
        let meta = match self.txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StoreErr::db(e)),
        };
        Ok(meta
            .get(key)
            .map_err(StoreErr::db)?
            .map(|v| v.value().to_string()))
    }

    pub(crate) fn len<T: Tbl>(&mut self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        match self.table::<T>()? {
            Some(t) => t.len().map_err(db),
            None => Ok(0),
        }
    }

    /// The table, `None` if the file does not have it (a file written by
    /// an import, or by an older build).
    fn table<T: Tbl>(&mut self) -> Result<Option<&RTable<T>>> {
        let slot = T::read_slot(&mut self.slots);
        if slot.is_none() {
            match self.txn.open_table(T::def()) {
                Ok(t) => *slot = Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(db(e)),
            }
        }
        Ok(slot.as_ref())
    }
}

impl Get for Snap {
    fn get<T: Tbl>(&mut self, k: &T::K) -> Result<Option<T::V>> {
        match self.table::<T>()? {
            Some(t) => get::<T>(t, k),
            None => Ok(None),
        }
    }

    fn scan<T: Tbl>(
        &mut self,
        lo: Bound<&T::K>,
        hi: Bound<&T::K>,
        rev: bool,
        f: impl FnMut(T::K, T::V) -> Result<bool>,
    ) -> Result<()> {
        match self.table::<T>()? {
            Some(t) => scan::<T>(t, lo, hi, rev, f),
            None => Ok(()),
        }
    }
}
