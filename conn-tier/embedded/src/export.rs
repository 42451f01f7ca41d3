//! `conn-tier admin export`: an embedded data file (a stopped server's, or
//! a backup) written as the portable stream of [`chat_core::export`], from
//! one read transaction (docs/operations.md, "Export and import").

use crate::backup::Progress;
use crate::error::Error;
use crate::tables::*;
use chat_core::export::{Header, Record, EXPORT_FORMAT};
use chat_core::ports::GroupMember;
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableError};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Writes `file` (a `chat.redb` no server holds, or a backup) to `out`.
/// The counts of each kind written.
pub fn export_file(
    file: &Path,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BTreeMap<String, u64>, Error> {
    crate::backup::with_snapshot(file, |txn| {
        export(txn, &format!("embedded {}", file.display()), out, progress)
    })
}

fn len<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> Result<u64, Error> {
    match txn.open_table(def) {
        Ok(t) => t.len().map_err(Error::db),
        Err(TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(Error::db(e)),
    }
}

/// Writes one snapshot: the header (with counts), then every record.
pub(crate) fn export(
    txn: &ReadTransaction,
    source: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BTreeMap<String, u64>, Error> {
    let counts: BTreeMap<String, u64> = [
        ("group", len(txn, GROUPS)?),
        ("member", len(txn, GROUP_MEMBERS)?),
        ("membership", len(txn, USERS)?),
        ("message", len(txn, MESSAGES)?),
        ("idempotency", len(txn, IDEMPOTENCY)?),
        ("device", len(txn, DEVICES)?),
        ("cursor", len(txn, CURSORS)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut w = Out {
        out,
        written: BTreeMap::new(),
        counts: &counts,
        progress,
    };
    w.put(&Record::Header(Header {
        format: EXPORT_FORMAT,
        source: source.to_string(),
        exported_at_ms: chat_core::time::now_ms(),
        counts: counts.clone(),
    }))?;
    let users = open_if_exists(txn, USERS)?;
    let table = open_if_exists(txn, GROUPS)?;
    for row in iter(&table)? {
        let (k, v) = row.map_err(Error::db)?;
        let b: GroupBody = body(v.value())?;
        w.put(&Record::Group {
            group_id: k.value().to_string(),
            name: b.name,
            created_by: b.created_by,
            created_at_ms: b.created_at_ms,
            admins: b.admins,
            version: b.version,
            next_seq: b.next_seq,
        })?;
    }
    let table = open_if_exists(txn, GROUP_MEMBERS)?;
    for row in iter(&table)? {
        let (k, v) = row.map_err(Error::db)?;
        let (g, u) = k.value();
        let m: GroupMember = body(v.value())?;
        let conv = format!("grp#{g}");
        let marks: Option<MembershipBody> = match &users {
            Some(users) => {
                let row = users.get((u, conv.as_str())).map_err(Error::db)?;
                row.map(|r| body(r.value())).transpose()?
            }
            None => None,
        };
        w.put(&Record::Member {
            group_id: g.to_string(),
            user_id: u.to_string(),
            joined_at_ms: m.joined_at_ms,
            seq: m.seq,
            last_sent: marks.as_ref().map(|m| m.last_sent).unwrap_or(0),
            read_up_to: marks.as_ref().map(|m| m.acked_up_to).unwrap_or(0),
            joined_at_id: m.joined_at_id,
        })?;
    }
    for row in iter(&users)? {
        let (k, v) = row.map_err(Error::db)?;
        let (u, conv) = k.value();
        let b: MembershipBody = body(v.value())?;
        w.put(&Record::Membership {
            user_id: u.to_string(),
            conversation_id: conv.to_string(),
            acked_up_to: b.acked_up_to,
            joined_at_ms: b.joined_at_ms,
            joined_at_id: b.joined_at_id,
        })?;
    }
    let table = open_if_exists(txn, MESSAGES)?;
    for row in iter(&table)? {
        let (k, v) = row.map_err(Error::db)?;
        let (conv, id) = k.value();
        let b: MessageBody = body(v.value())?;
        w.put(&Record::Message {
            conversation_id: conv.to_string(),
            message_id: id,
            sender: b.sender,
            client_msg_id: b.client_msg_id,
            text: b.text,
            sent_at_ms: b.sent_at_ms,
        })?;
    }
    let table = open_if_exists(txn, IDEMPOTENCY)?;
    for row in iter(&table)? {
        let (k, v) = row.map_err(Error::db)?;
        let ((sender, cmid), (conv, id)) = (k.value(), v.value());
        w.put(&Record::Idempotency {
            sender: sender.to_string(),
            client_msg_id: cmid.to_string(),
            conversation_id: conv.to_string(),
            message_id: id,
        })?;
    }
    let table = open_if_exists(txn, DEVICES)?;
    for row in iter(&table)? {
        let (k, v) = row.map_err(Error::db)?;
        let (u, d) = k.value();
        w.put(&Record::Device {
            user_id: u.to_string(),
            device_id: d.to_string(),
            last_used_ms: v.value(),
        })?;
    }
    let table = open_if_exists(txn, CURSORS)?;
    for row in iter(&table)? {
        let (k, v) = row.map_err(Error::db)?;
        let ((u, d, conv), (up_to, moved)) = (k.value(), v.value());
        w.put(&Record::Cursor {
            user_id: u.to_string(),
            device_id: d.to_string(),
            conversation_id: conv.to_string(),
            up_to,
            moved_at_ms: moved,
        })?;
    }
    w.out.flush().map_err(|source| Error::Io {
        context: "writing the export".into(),
        source,
    })?;
    Ok(w.written)
}

/// A row: its key and value.
type Row<'t, K, V> = (redb::AccessGuard<'t, K>, redb::AccessGuard<'t, V>);

/// The rows of a table that may not exist (none then).
fn iter<'t, K: redb::Key + 'static, V: redb::Value + 'static>(
    table: &'t Option<redb::ReadOnlyTable<K, V>>,
) -> Result<impl Iterator<Item = redb::Result<Row<'t, K, V>>> + 't, Error> {
    Ok(table
        .as_ref()
        .map(|t| t.iter())
        .transpose()
        .map_err(Error::db)?
        .into_iter()
        .flatten())
}

fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

/// The output, counting what it writes and reporting progress.
struct Out<'a> {
    out: &'a mut dyn Write,
    written: BTreeMap<String, u64>,
    counts: &'a BTreeMap<String, u64>,
    progress: &'a mut dyn FnMut(Progress<'_>),
}

impl Out<'_> {
    fn put(&mut self, r: &Record) -> Result<(), Error> {
        self.out
            .write_all(r.line().as_bytes())
            .map_err(|source| Error::Io {
                context: "writing the export".into(),
                source,
            })?;
        if let Record::Header(_) = r {
            return Ok(());
        }
        let kind = r.kind();
        let n = self.written.entry(kind.to_string()).or_default();
        *n += 1;
        let of = self.counts.get(kind).copied().unwrap_or(0);
        if n.is_multiple_of(20_000) || *n == of {
            (self.progress)(Progress {
                table: kind,
                done: *n,
                of,
            });
        }
        Ok(())
    }
}
