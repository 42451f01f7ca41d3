//! The engine seam: the store's tables as typed rows, over either engine
//! (docs/design.md, "The embedded engines").
//!
//! Every entity module reads and writes through [`Get`] and [`Batch::put`]
//! / [`Batch::del`], never through an engine's own API, so redb and fjall
//! run the same logic. A table is a marker type ([`Tbl`]) naming its key
//! and value [`Shape`]s; each engine keeps its own layout:
//!
//! - redb: one typed table per [`Tbl`], exactly the tables of format 1
//!   (a file written before the seam opens unchanged);
//! - fjall: one keyspace per [`Tbl`], keys and values encoded by
//!   [`Shape::enc`] so that byte order is the typed key's order.
//!
//! # Layout
//! - this file: [`Tbl`], [`Get`], the [`Engine`], [`Txn`], [`Batch`] and
//!   [`Snap`] enums that dispatch to an engine;
//! - `shape`: [`Shape`], the key and value types and their encodings;
//! - `redb`: the redb engine (lazily opened tables per transaction);
//! - `fjall`: the fjall engine (keyspaces, a single-writer transaction).

mod fjall;
pub(crate) mod redb;
mod shape;

use crate::error::Error as StoreErr;
use chat_core::Result;
use std::ops::Bound;
use std::path::Path;

pub(crate) use self::fjall::FjallEngine;
pub(crate) use self::redb::RedbEngine;
pub(crate) use self::shape::{dec, enc, KeyShape, Shape};

/// Which engine a data directory uses (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// One file, `chat.redb`: a copy-on-write B-tree, fsynced per commit.
    #[default]
    Redb,
    /// A directory, `chat.fjall/`: an LSM tree (journal, memtables,
    /// compaction), the journal fsynced per commit.
    Fjall,
}

impl EngineKind {
    /// The file (redb) or directory (fjall) it keeps in the data directory.
    pub fn data_name(self) -> &'static str {
        match self {
            EngineKind::Redb => "chat.redb",
            EngineKind::Fjall => "chat.fjall",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Redb => "redb",
            EngineKind::Fjall => "fjall",
        }
    }

    pub fn other(self) -> EngineKind {
        match self {
            EngineKind::Redb => EngineKind::Fjall,
            EngineKind::Fjall => EngineKind::Redb,
        }
    }

    /// The engine whose data `dir` holds, if any; an error if it holds
    /// both (which a server never leaves: it refuses to start beside the
    /// other engine's data).
    pub fn found_in(dir: &Path) -> std::result::Result<Option<EngineKind>, String> {
        let found: Vec<EngineKind> = [EngineKind::Redb, EngineKind::Fjall]
            .into_iter()
            .filter(|k| dir.join(k.data_name()).exists())
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(format!(
                "{} holds both chat.redb and chat.fjall: move the one not in use away",
                dir.display()
            )),
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "redb" => Ok(EngineKind::Redb),
            "fjall" => Ok(EngineKind::Fjall),
            other => Err(format!("unknown engine {other:?}: redb or fjall")),
        }
    }
}

/// A table: its name (the redb table's, the fjall keyspace's), its key and
/// value shapes, and where each engine keeps its open handle.
pub(crate) trait Tbl: 'static {
    const NAME: &'static str;
    /// Its place among the fjall keyspaces.
    const IDX: usize;
    type K: KeyShape;
    type V: Shape;
    fn def() -> ::redb::TableDefinition<'static, <Self::K as Shape>::R, <Self::V as Shape>::R> {
        ::redb::TableDefinition::new(Self::NAME)
    }
    fn write_slot<'s, 't>(
        s: &'s mut redb::WriteSlots<'t>,
    ) -> &'s mut Option<redb::WTable<'t, Self>>;
    fn read_slot(s: &mut redb::ReadSlots) -> &mut Option<redb::RTable<Self>>;
}

/// Reads of one transaction (a snapshot, or the write batch so far).
pub(crate) trait Get {
    fn get<T: Tbl>(&mut self, k: &T::K) -> Result<Option<T::V>>;
    /// Visits the rows between `lo` and `hi` in key order (descending if
    /// `rev`) while `f` answers true.
    fn scan<T: Tbl>(
        &mut self,
        lo: Bound<&T::K>,
        hi: Bound<&T::K>,
        rev: bool,
        f: impl FnMut(T::K, T::V) -> Result<bool>,
    ) -> Result<()>;
}

/// Runs `one` on `rows` (ascending, or descending if `rev`) while it
/// answers true: the walk of both engines' scans.
fn drive<I: DoubleEndedIterator>(
    rows: I,
    rev: bool,
    mut one: impl FnMut(I::Item) -> Result<bool>,
) -> Result<()> {
    if rev {
        for row in rows.rev() {
            if !one(row)? {
                break;
            }
        }
    } else {
        for row in rows {
            if !one(row)? {
                break;
            }
        }
    }
    Ok(())
}

/// The open data of either engine.
pub(crate) enum Engine {
    Redb(RedbEngine),
    Fjall(FjallEngine),
}

impl Engine {
    pub(crate) fn kind(&self) -> EngineKind {
        match self {
            Engine::Redb(_) => EngineKind::Redb,
            Engine::Fjall(_) => EngineKind::Fjall,
        }
    }

    /// Opens (or creates) the engine's data in `dir`.
    pub(crate) fn open(kind: EngineKind, dir: &Path) -> std::result::Result<Engine, StoreErr> {
        Ok(match kind {
            EngineKind::Redb => Engine::Redb(RedbEngine::open(&dir.join(kind.data_name()))?),
            EngineKind::Fjall => Engine::Fjall(FjallEngine::open(&dir.join(kind.data_name()))?),
        })
    }

    /// Starts a write transaction (the writer's group commit).
    pub(crate) fn begin(&self) -> std::result::Result<Txn<'_>, String> {
        Ok(match self {
            Engine::Redb(e) => Txn::Redb(e.begin()?),
            Engine::Fjall(e) => Txn::Fjall(e.begin(), e),
        })
    }

    /// A consistent snapshot of the last commit.
    pub(crate) fn snapshot(&self) -> std::result::Result<Snap, StoreErr> {
        Ok(match self {
            Engine::Redb(e) => Snap::Redb(e.snapshot()?),
            Engine::Fjall(e) => Snap::Fjall(e.snapshot()),
        })
    }

    /// Commits one small write: whether the engine can write again.
    pub(crate) fn probe(&self) -> std::result::Result<(), String> {
        match self {
            Engine::Redb(e) => e.probe(),
            Engine::Fjall(e) => e.probe(),
        }
    }
}

/// One write transaction of either engine: its writes go through
/// [`Txn::batch`], then it commits or aborts.
// One per transaction, on the stack: boxing the redb side would add
// an allocation to every read and every group commit.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Txn<'e> {
    Redb(::redb::WriteTransaction),
    Fjall(::fjall::SingleWriterWriteTx<'e>, &'e FjallEngine),
}

impl Txn<'_> {
    /// The transaction's tables (redb opens each once, on first use).
    pub(crate) fn batch(&mut self) -> Batch<'_> {
        match self {
            Txn::Redb(t) => Batch::Redb(redb::Batch::new(t)),
            Txn::Fjall(t, e) => Batch::Fjall(e.batch(t)),
        }
    }

    /// Makes the transaction durable (one fsync).
    pub(crate) fn commit(self) -> std::result::Result<(), String> {
        match self {
            Txn::Redb(t) => t.commit().map_err(|e| e.to_string()),
            Txn::Fjall(t, _) => t.commit().map_err(|e| e.to_string()),
        }
    }

    /// Drops the transaction's writes.
    pub(crate) fn abort(self) {
        match self {
            Txn::Redb(t) => drop(t.abort()),
            Txn::Fjall(t, _) => t.rollback(),
        }
    }
}

/// The tables of one write transaction, of either engine.
// One per transaction, on the stack: boxing the redb side would add
// an allocation to every read and every group commit.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Batch<'t> {
    Redb(redb::Batch<'t>),
    Fjall(fjall::Batch<'t>),
}

impl Batch<'_> {
    pub(crate) fn put<T: Tbl>(&mut self, k: &T::K, v: &T::V) -> Result<()> {
        match self {
            Batch::Redb(b) => b.put::<T>(k, v),
            Batch::Fjall(b) => b.put::<T>(k, v),
        }
    }

    pub(crate) fn del<T: Tbl>(&mut self, k: &T::K) -> Result<()> {
        match self {
            Batch::Redb(b) => b.del::<T>(k),
            Batch::Fjall(b) => b.del::<T>(k),
        }
    }

    /// Sets a value of the `meta` table, in this transaction.
    pub(crate) fn put_meta(&mut self, key: &str, value: &str) -> Result<()> {
        match self {
            Batch::Redb(b) => b.put_meta(key, value),
            Batch::Fjall(b) => b.put_meta(key, value),
        }
    }
}

impl Get for Batch<'_> {
    fn get<T: Tbl>(&mut self, k: &T::K) -> Result<Option<T::V>> {
        match self {
            Batch::Redb(b) => b.get::<T>(k),
            Batch::Fjall(b) => b.get::<T>(k),
        }
    }

    fn scan<T: Tbl>(
        &mut self,
        lo: Bound<&T::K>,
        hi: Bound<&T::K>,
        rev: bool,
        f: impl FnMut(T::K, T::V) -> Result<bool>,
    ) -> Result<()> {
        match self {
            Batch::Redb(b) => b.scan::<T>(lo, hi, rev, f),
            Batch::Fjall(b) => b.scan::<T>(lo, hi, rev, f),
        }
    }
}

/// A read snapshot of either engine.
// One per transaction, on the stack: boxing the redb side would add
// an allocation to every read and every group commit.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Snap {
    Redb(redb::Snap),
    Fjall(fjall::Snap),
}

impl Snap {
    /// The rows of `T` (fjall counts them: a pass over the table).
    pub(crate) fn len<T: Tbl>(&mut self) -> Result<u64> {
        match self {
            Snap::Redb(s) => s.len::<T>(),
            Snap::Fjall(s) => s.len::<T>(),
        }
    }

    /// About the rows of `T`, for progress reports (exact with redb, an
    /// estimate with fjall, where counting is a pass over the table).
    pub(crate) fn len_hint<T: Tbl>(&mut self) -> Result<u64> {
        match self {
            Snap::Redb(s) => s.len::<T>(),
            Snap::Fjall(s) => Ok(s.len_hint::<T>()),
        }
    }

    /// A value of the `meta` table (the format, an import's progress).
    pub(crate) fn meta(&mut self, key: &str) -> std::result::Result<Option<String>, StoreErr> {
        match self {
            Snap::Redb(s) => s.meta(key),
            Snap::Fjall(s) => s.meta(key),
        }
    }

    /// The format version the data records (this build's if none).
    pub(crate) fn format(&self) -> std::result::Result<u64, StoreErr> {
        match self {
            Snap::Redb(s) => crate::backup::format_of(s.txn()),
            Snap::Fjall(s) => s.format(),
        }
    }
}

impl Get for Snap {
    fn get<T: Tbl>(&mut self, k: &T::K) -> Result<Option<T::V>> {
        match self {
            Snap::Redb(s) => s.get::<T>(k),
            Snap::Fjall(s) => s.get::<T>(k),
        }
    }

    fn scan<T: Tbl>(
        &mut self,
        lo: Bound<&T::K>,
        hi: Bound<&T::K>,
        rev: bool,
        f: impl FnMut(T::K, T::V) -> Result<bool>,
    ) -> Result<()> {
        match self {
            Snap::Redb(s) => s.scan::<T>(lo, hi, rev, f),
            Snap::Fjall(s) => s.scan::<T>(lo, hi, rev, f),
        }
    }
}
