//! `conn-tier admin import FILE --data-dir DIR`: a portable stream
//! ([`chat_core::export`]) loaded into a stopped server's embedded store
//! (docs/operations.md, "Export and import").
//!
//! - Every record is a keyed put: loading one twice changes nothing, so a
//!   re-run is idempotent.
//! - Records are committed in batches of [`BATCH`]; each commit also
//!   records, in the file's `meta` table, which stream it is (its header)
//!   and the last line committed. A re-run after a crash skips to the next
//!   line and finishes: each record lands exactly once.
//! - It refuses a data directory a server holds, and one that holds other
//!   data (an import is a move, not a merge: ids would collide).
//! - Each conversation's id counter becomes its newest imported id, so the
//!   server carries each conversation on without a gap.

use crate::backup::Progress;
use crate::error::Error;
use crate::format::{self, META};
use crate::tables::*;
use chat_core::export::{Reader, Record};
use chat_core::ports::GroupMember;
use redb::{Database, ReadableTable, ReadableTableMetadata, WriteTransaction};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Records per commit.
pub const BATCH: u64 = 5_000;
const HEADER_KEY: &str = "import.header";
const LINE_KEY: &str = "import.line";
const DONE_KEY: &str = "import.done";

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// Records loaded by this run, by kind.
    pub loaded: BTreeMap<String, u64>,
    /// Lines skipped because an earlier run had committed them.
    pub resumed_after_line: u64,
}

pub fn import(
    input: impl BufRead,
    data_dir: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ImportReport, Error> {
    let mut reader = Reader::new(input).map_err(|e| Error::Admin(e.to_string()))?;
    let header = serde_json::to_string(reader.header()).unwrap_or_default();
    let total: u64 = reader
        .header()
        .counts
        .values()
        .fold(0, |a, b| a.saturating_add(*b));
    std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
        context: format!("creating {}", data_dir.display()),
        source,
    })?;
    let path = data_dir.join("chat.redb");
    let db = match Database::create(&path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(Error::Admin(format!(
                "{} is in use by a running chat server: stop it before importing",
                path.display()
            )))
        }
        Err(e) => return Err(Error::db(e)),
    };
    format::check_and_record(&db, &path)?;
    let mut report = ImportReport::default();
    // Where an earlier run of this same stream stopped.
    let (earlier, done_before) = {
        let txn = db.begin_write().map_err(Error::db)?;
        let meta = txn.open_table(META).map_err(Error::db)?;
        let get = |k| -> Result<Option<String>, Error> {
            Ok(meta
                .get(k)
                .map_err(Error::db)?
                .map(|v| v.value().to_string()))
        };
        let same = get(HEADER_KEY)?.as_deref() == Some(header.as_str());
        let line = if same {
            get(LINE_KEY)?.and_then(|l| l.parse().ok())
        } else {
            None
        };
        let done = same && get(DONE_KEY)?.is_some();
        let empty = txn
            .open_table(MESSAGES)
            .map_err(Error::db)?
            .is_empty()
            .map_err(Error::db)?
            && txn
                .open_table(USERS)
                .map_err(Error::db)?
                .is_empty()
                .map_err(Error::db)?
            && txn
                .open_table(GROUPS)
                .map_err(Error::db)?
                .is_empty()
                .map_err(Error::db)?;
        drop(meta);
        txn.abort().map_err(Error::db)?;
        if line.is_none() && !empty {
            return Err(Error::Admin(format!(
                "{} already holds other data: import into an empty data directory (an import moves a server's data; it does not merge two)",
                path.display()
            )));
        }
        (line.unwrap_or(1), done)
    };
    report.resumed_after_line = if earlier > 1 { earlier } else { 0 };
    if done_before {
        return Ok(report);
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut txn = begin(&db)?;
    let mut in_batch = 0;
    let mut done = 0u64;
    // The line of the last record put (what a commit records).
    let mut last = earlier;
    while let Some(record) = reader
        .next_record()
        .map_err(|e| Error::Admin(e.to_string()))?
    {
        let line = reader.line();
        *seen.entry(record.kind().to_string()).or_default() += 1;
        done += 1;
        if line <= earlier {
            continue;
        }
        put(&txn, &record)?;
        last = line;
        *report.loaded.entry(record.kind().to_string()).or_default() += 1;
        in_batch += 1;
        if in_batch == BATCH {
            commit(txn, &header, last, false)?;
            progress(Progress {
                table: "records",
                done,
                of: total,
            });
            txn = begin(&db)?;
            in_batch = 0;
        }
    }
    // Every record the header counts must have come: a cut stream is not
    // a complete import (what was read stays; a re-run of the whole
    // stream finishes it).
    for (kind, want) in &reader.header().counts {
        let got = seen.get(kind).copied().unwrap_or(0);
        if got != *want {
            commit(txn, &header, last, false)?;
            return Err(Error::Admin(format!(
                "the stream ends early: its header counts {want} {kind} records, it holds {got}"
            )));
        }
    }
    commit(txn, &header, last, true)?;
    progress(Progress {
        table: "records",
        done,
        of: total,
    });
    Ok(report)
}

fn begin(db: &Database) -> Result<WriteTransaction, Error> {
    db.begin_write().map_err(Error::db)
}

/// Commits a batch with the line it reached, in the same transaction.
fn commit(txn: WriteTransaction, header: &str, line: u64, finished: bool) -> Result<(), Error> {
    {
        let mut meta = txn.open_table(META).map_err(Error::db)?;
        meta.insert(HEADER_KEY, header).map_err(Error::db)?;
        meta.insert(LINE_KEY, line.to_string().as_str())
            .map_err(Error::db)?;
        if finished {
            meta.insert(DONE_KEY, "1").map_err(Error::db)?;
        }
    }
    txn.commit().map_err(Error::db)
}

fn membership(
    txn: &WriteTransaction,
    user: &str,
    conv: &str,
) -> Result<Option<MembershipBody>, Error> {
    let users = txn.open_table(USERS).map_err(Error::db)?;
    let row = users.get((user, conv)).map_err(Error::db)?;
    row.map(|r| serde_json::from_slice(r.value()).map_err(|e| Error::Corrupt(e.to_string())))
        .transpose()
}

fn put_membership(
    txn: &WriteTransaction,
    user: &str,
    conv: &str,
    b: &MembershipBody,
) -> Result<(), Error> {
    txn.open_table(USERS)
        .map_err(Error::db)?
        .insert((user, conv), enc(b).as_slice())
        .map_err(Error::db)?;
    Ok(())
}

fn put(txn: &WriteTransaction, record: &Record) -> Result<(), Error> {
    match record {
        Record::Header(_) => {}
        Record::Group {
            group_id,
            name,
            created_by,
            created_at_ms,
            admins,
            version,
            next_seq,
        } => {
            let body = GroupBody {
                name: name.clone(),
                created_by: created_by.clone(),
                created_at_ms: *created_at_ms,
                admins: admins.clone(),
                version: *version,
                next_seq: *next_seq,
            };
            txn.open_table(GROUPS)
                .map_err(Error::db)?
                .insert(group_id.as_str(), enc(&body).as_slice())
                .map_err(Error::db)?;
        }
        Record::Member {
            group_id,
            user_id,
            joined_at_ms,
            seq,
            last_sent,
            read_up_to,
            joined_at_id,
        } => {
            let m = GroupMember {
                user_id: user_id.clone(),
                joined_at_ms: *joined_at_ms,
                seq: *seq,
                joined_at_id: *joined_at_id,
            };
            txn.open_table(GROUP_MEMBERS)
                .map_err(Error::db)?
                .insert((group_id.as_str(), user_id.as_str()), enc(&m).as_slice())
                .map_err(Error::db)?;
            // The member's newest message lives on its membership row here;
            // the membership record (later in the stream) keeps it.
            let conv = format!("grp#{group_id}");
            let body = match membership(txn, user_id, &conv)? {
                Some(b) => MembershipBody {
                    last_sent: *last_sent,
                    ..b
                },
                None => MembershipBody {
                    acked_up_to: *read_up_to,
                    joined_at_ms: *joined_at_ms,
                    joined_at_id: *joined_at_id,
                    last_sent: *last_sent,
                },
            };
            put_membership(txn, user_id, &conv, &body)?;
        }
        Record::Membership {
            user_id,
            conversation_id,
            acked_up_to,
            joined_at_ms,
            joined_at_id,
        } => {
            let last_sent = membership(txn, user_id, conversation_id)?
                .map(|b| b.last_sent)
                .unwrap_or(0);
            let body = MembershipBody {
                acked_up_to: *acked_up_to,
                joined_at_ms: *joined_at_ms,
                joined_at_id: *joined_at_id,
                last_sent,
            };
            put_membership(txn, user_id, conversation_id, &body)?;
        }
        Record::Message {
            conversation_id,
            message_id,
            sender,
            client_msg_id,
            text,
            sent_at_ms,
        } => {
            let body = MessageBody {
                sender: sender.clone(),
                client_msg_id: client_msg_id.clone(),
                text: text.clone(),
                sent_at_ms: *sent_at_ms,
                origin: None,
            };
            txn.open_table(MESSAGES)
                .map_err(Error::db)?
                .insert(
                    (conversation_id.as_str(), *message_id),
                    enc(&body).as_slice(),
                )
                .map_err(Error::db)?;
            let mut last = txn.open_table(LAST_ID).map_err(Error::db)?;
            let top = last
                .get(conversation_id.as_str())
                .map_err(Error::db)?
                .map(|v| v.value())
                .unwrap_or(0);
            if *message_id > top {
                last.insert(conversation_id.as_str(), *message_id)
                    .map_err(Error::db)?;
            }
        }
        Record::Idempotency {
            sender,
            client_msg_id,
            conversation_id,
            message_id,
        } => {
            txn.open_table(IDEMPOTENCY)
                .map_err(Error::db)?
                .insert(
                    (sender.as_str(), client_msg_id.as_str()),
                    (conversation_id.as_str(), *message_id),
                )
                .map_err(Error::db)?;
        }
        Record::Device {
            user_id,
            device_id,
            last_used_ms,
        } => {
            txn.open_table(DEVICES)
                .map_err(Error::db)?
                .insert((user_id.as_str(), device_id.as_str()), *last_used_ms)
                .map_err(Error::db)?;
        }
        Record::Cursor {
            user_id,
            device_id,
            conversation_id,
            up_to,
            moved_at_ms,
        } => {
            txn.open_table(CURSORS)
                .map_err(Error::db)?
                .insert(
                    (
                        user_id.as_str(),
                        device_id.as_str(),
                        conversation_id.as_str(),
                    ),
                    (*up_to, *moved_at_ms),
                )
                .map_err(Error::db)?;
        }
    }
    Ok(())
}
