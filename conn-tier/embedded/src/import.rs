//! `conn-tier admin import FILE --data-dir DIR`: a portable stream
//! ([`chat_core::export`]) loaded into a stopped server's embedded store,
//! with either engine (`--engine`; so export and import move data from
//! one engine to the other)
//! (docs/operations.md, "Export and import").
//!
//! - Every record is a keyed put: loading one twice changes nothing, so a
//!   re-run is idempotent.
//! - Records are committed in batches of [`BATCH`]; each commit also
//!   records, in the data's `meta` table (fjall: keyspace), which stream it is (its header)
//!   and the last line committed. A re-run after a crash skips to the next
//!   line and finishes: each record lands exactly once.
//! - It refuses a data directory a server holds, and one that holds other
//!   data (an import is a move, not a merge: ids would collide).
//! - Each conversation's id counter becomes its newest imported id, so the
//!   server carries each conversation on without a gap.

use crate::backup::{chunk, read_failed, Progress};
use crate::error::Error;
use crate::kv::{Batch, Engine, Get, Snap, Tbl};
use crate::tables::*;
use crate::EngineKind;
use chat_core::export::{Reader, Record};
use chat_core::ports::GroupMember;
use chat_core::Result;
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

/// Loads `input` into `data_dir` with the engine `kind` (a directory
/// that holds the other engine's data is refused).
pub fn import(
    input: impl BufRead,
    data_dir: &Path,
    kind: EngineKind,
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
    if data_dir.join(kind.other().data_name()).exists() {
        return Err(Error::OtherEngine {
            dir: data_dir.to_path_buf(),
            found: kind.other(),
            asked: kind,
        });
    }
    let path = data_dir.join(kind.data_name());
    let engine = match Engine::open(kind, data_dir) {
        Ok(e) => e,
        Err(Error::Locked { .. }) => {
            return Err(Error::Admin(format!(
                "{} is in use by a running chat server: stop it before importing",
                path.display()
            )))
        }
        Err(e) => return Err(e),
    };
    let mut report = ImportReport::default();
    // Where an earlier run of this same stream stopped.
    let (earlier, done_before) = {
        let mut snap = engine.snapshot()?;
        let same = snap.meta(HEADER_KEY)?.as_deref() == Some(header.as_str());
        let line = if same {
            snap.meta(LINE_KEY)?.and_then(|l| l.parse().ok())
        } else {
            None
        };
        let done = same && snap.meta(DONE_KEY)?.is_some();
        let empty = is_empty::<Messages>(&mut snap)?
            && is_empty::<Users>(&mut snap)?
            && is_empty::<Groups>(&mut snap)?;
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
    let mut done = 0u64;
    // The line of the last record put (what a commit records).
    let mut last = earlier;
    let mut ended = false;
    while !ended {
        let mut txn = engine.begin().map_err(Error::Admin)?;
        let mut batch = txn.batch();
        let mut in_batch = 0;
        while in_batch < BATCH {
            let Some(record) = reader
                .next_record()
                .map_err(|e| Error::Admin(e.to_string()))?
            else {
                ended = true;
                break;
            };
            let line = reader.line();
            *seen.entry(record.kind().to_string()).or_default() += 1;
            done += 1;
            if line <= earlier {
                continue;
            }
            put(&mut batch, &record).map_err(failed)?;
            last = line;
            *report.loaded.entry(record.kind().to_string()).or_default() += 1;
            in_batch += 1;
        }
        // Every record the header counts must have come: a cut stream is
        // not a complete import (what was read stays; a re-run of the
        // whole stream finishes it).
        let short = reader.header().counts.iter().find_map(|(kind, want)| {
            let got = seen.get(kind).copied().unwrap_or(0);
            (ended && got != *want).then(|| (kind.clone(), *want, got))
        });
        // The line reached is committed with the batch, in the same
        // transaction.
        batch.put_meta(HEADER_KEY, &header).map_err(failed)?;
        batch
            .put_meta(LINE_KEY, &last.to_string())
            .map_err(failed)?;
        if ended && short.is_none() {
            batch.put_meta(DONE_KEY, "1").map_err(failed)?;
        }
        drop(batch);
        txn.commit().map_err(Error::Admin)?;
        progress(Progress {
            table: "records",
            done,
            of: total,
        });
        if let Some((kind, want, got)) = short {
            return Err(Error::Admin(format!(
                "the stream ends early: its header counts {want} {kind} records, it holds {got}"
            )));
        }
    }
    Ok(report)
}

fn failed(e: chat_core::Error) -> Error {
    Error::Admin(format!("writing the data: {e}"))
}

/// Whether `T` has no row.
fn is_empty<T: Tbl>(snap: &mut Snap) -> Result<bool, Error> {
    Ok(chunk::<T>(snap, None, 1).map_err(read_failed)?.is_empty())
}

fn membership(batch: &mut Batch<'_>, user: &str, conv: &str) -> Result<Option<MembershipBody>> {
    batch
        .get::<Users>(&(user.to_string(), conv.to_string()))?
        .map(|r| dec(&r))
        .transpose()
}

fn put_membership(batch: &mut Batch<'_>, user: &str, conv: &str, b: &MembershipBody) -> Result<()> {
    batch.put::<Users>(&(user.to_string(), conv.to_string()), &enc(b))
}

fn put(batch: &mut Batch<'_>, record: &Record) -> Result<()> {
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
            batch.put::<Groups>(group_id, &enc(&body))?;
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
            batch.put::<GroupMembers>(&(group_id.clone(), user_id.clone()), &enc(&m))?;
            // The member's newest message lives on its membership row here;
            // the membership record (later in the stream) keeps it.
            let conv = format!("grp#{group_id}");
            let body = match membership(batch, user_id, &conv)? {
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
            put_membership(batch, user_id, &conv, &body)?;
        }
        Record::Membership {
            user_id,
            conversation_id,
            acked_up_to,
            joined_at_ms,
            joined_at_id,
        } => {
            let last_sent = membership(batch, user_id, conversation_id)?
                .map(|b| b.last_sent)
                .unwrap_or(0);
            let body = MembershipBody {
                acked_up_to: *acked_up_to,
                joined_at_ms: *joined_at_ms,
                joined_at_id: *joined_at_id,
                last_sent,
            };
            put_membership(batch, user_id, conversation_id, &body)?;
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
            batch.put::<Messages>(&(conversation_id.clone(), *message_id), &enc(&body))?;
            let top = batch.get::<LastId>(conversation_id)?.unwrap_or(0);
            if *message_id > top {
                batch.put::<LastId>(conversation_id, message_id)?;
            }
        }
        Record::Idempotency {
            sender,
            client_msg_id,
            conversation_id,
            message_id,
        } => {
            batch.put::<Idempotency>(
                &(sender.clone(), client_msg_id.clone()),
                &(conversation_id.clone(), *message_id),
            )?;
        }
        Record::Device {
            user_id,
            device_id,
            last_used_ms,
        } => {
            batch.put::<Devices>(&(user_id.clone(), device_id.clone()), last_used_ms)?;
        }
        Record::Cursor {
            user_id,
            device_id,
            conversation_id,
            up_to,
            moved_at_ms,
        } => {
            batch.put::<Cursors>(
                &(user_id.clone(), device_id.clone(), conversation_id.clone()),
                &(*up_to, *moved_at_ms),
            )?;
        }
    }
    Ok(())
}
