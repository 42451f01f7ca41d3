//! `conn-tier admin export`: an embedded data file (a stopped server's, or
//! a backup, or a fjall data directory) written as the portable stream of
//! [`chat_core::export`], from one snapshot (docs/operations.md, "Export and import").

use crate::backup::{each, read_failed, Progress};
use crate::error::Error;
use crate::kv::{Get, Snap};
use crate::tables::*;
use chat_core::export::{Header, Record, EXPORT_FORMAT};
use chat_core::ports::GroupMember;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Writes `file` (a `chat.redb` no server holds, a backup, or a stopped
/// server's `chat.fjall` directory) to `out`. The counts of each kind
/// written.
pub fn export_file(
    file: &Path,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BTreeMap<String, u64>, Error> {
    crate::backup::with_snapshot(file, |snap| {
        export(snap, &format!("embedded {}", file.display()), out, progress)
    })
}

/// Writes one snapshot: the header (with counts), then every record.
pub(crate) fn export(
    snap: &mut Snap,
    source: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BTreeMap<String, u64>, Error> {
    let counts: BTreeMap<String, u64> = [
        ("group", snap.len::<Groups>()),
        ("member", snap.len::<GroupMembers>()),
        ("membership", snap.len::<Users>()),
        ("message", snap.len::<Messages>()),
        ("idempotency", snap.len::<Idempotency>()),
        ("device", snap.len::<Devices>()),
        ("cursor", snap.len::<Cursors>()),
    ]
    .into_iter()
    .map(|(k, v)| Ok((k.to_string(), v.map_err(read_failed)?)))
    .collect::<Result<_, Error>>()?;
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
    each::<Groups>(snap, |_, group_id, v| {
        let b: GroupBody = body(&v)?;
        w.put(&Record::Group {
            group_id,
            name: b.name,
            created_by: b.created_by,
            created_at_ms: b.created_at_ms,
            admins: b.admins,
            version: b.version,
            next_seq: b.next_seq,
        })
    })?;
    each::<GroupMembers>(snap, |snap, (g, u), v| {
        let m: GroupMember = body(&v)?;
        let conv = format!("grp#{g}");
        let marks: Option<MembershipBody> = snap
            .get::<Users>(&(u.clone(), conv))
            .map_err(read_failed)?
            .map(|r| body(&r))
            .transpose()?;
        w.put(&Record::Member {
            group_id: g,
            user_id: u,
            joined_at_ms: m.joined_at_ms,
            seq: m.seq,
            last_sent: marks.as_ref().map(|m| m.last_sent).unwrap_or(0),
            read_up_to: marks.as_ref().map(|m| m.acked_up_to).unwrap_or(0),
            joined_at_id: m.joined_at_id,
        })
    })?;
    each::<Users>(snap, |_, (user_id, conversation_id), v| {
        let b: MembershipBody = body(&v)?;
        w.put(&Record::Membership {
            user_id,
            conversation_id,
            acked_up_to: b.acked_up_to,
            joined_at_ms: b.joined_at_ms,
            joined_at_id: b.joined_at_id,
        })
    })?;
    each::<Messages>(snap, |_, (conversation_id, message_id), v| {
        let b: MessageBody = body(&v)?;
        w.put(&Record::Message {
            conversation_id,
            message_id,
            sender: b.sender,
            client_msg_id: b.client_msg_id,
            text: b.text,
            sent_at_ms: b.sent_at_ms,
        })
    })?;
    each::<Idempotency>(
        snap,
        |_, (sender, client_msg_id), (conversation_id, message_id)| {
            w.put(&Record::Idempotency {
                sender,
                client_msg_id,
                conversation_id,
                message_id,
            })
        },
    )?;
    each::<Devices>(snap, |_, (user_id, device_id), last_used_ms| {
        w.put(&Record::Device {
            user_id,
            device_id,
            last_used_ms,
        })
    })?;
    each::<Cursors>(
        snap,
        |_, (user_id, device_id, conversation_id), (up_to, moved_at_ms)| {
            w.put(&Record::Cursor {
                user_id,
                device_id,
                conversation_id,
                up_to,
                moved_at_ms,
            })
        },
    )?;
    w.out.flush().map_err(|source| Error::Io {
        context: "writing the export".into(),
        source,
    })?;
    Ok(w.written)
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
