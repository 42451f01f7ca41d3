//! Export and import of the DynamoDB tables as the portable stream of
//! [`chat_core::export`] (docs/operations.md, "Export and import"): the
//! way from an embedded server to a cluster on DynamoDB, and the way out
//! of AWS.
//!
//! - **Export**: a paged, strongly consistent Scan of the messages, users
//!   and groups tables. Each conversation's messages come out as a gapless
//!   prefix of its ids (id n + 1 is written only after n, and never visible
//!   before it), so an export taken while the system runs is consistent per
//!   conversation. Resend records pointing at a message that was never
//!   stored (a send that crashed between its claim and its put) are left
//!   out, and so are those whose id went to another message since. Memberships,
//!   marks and cursors are scanned before the messages, so none is past
//!   its conversation's newest exported id. Quotas (short-lived counters)
//!   are not exported.
//! - **Import**: `BatchWriteItem` puts of 25 items, unprocessed items sent
//!   again with exponential back-off (the SDK retries throttling too).
//!   Every record is a keyed put, so a re-run is idempotent. A checkpoint
//!   file next to the input records the stream's header and the last line
//!   whose batch was fully written; a re-run after a crash resumes after
//!   it. Without a checkpoint, tables that hold data are refused (an import
//!   moves data, it does not merge).

use crate::codec::*;
use crate::config::Tables;
use crate::error::Error;
use crate::schema::*;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chat_core::export::{Header, Reader, Record, EXPORT_FORMAT};
use chat_core::ports::CURSOR_TTL_MS;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Items per BatchWriteItem (DynamoDB's limit).
const BATCH_ITEMS: usize = 25;
/// Resend records exported: those of the last day.
const CLAIMS_KEPT_SECS: u64 = 24 * 3600;
/// Rounds of re-sending unprocessed items before giving up.
const MAX_ROUNDS: u32 = 30;

/// How far an export or import is: records of all kinds done.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Transfer(format!("{context}: {e}"))
}

/// Every item of `table`, page by page, strongly consistent.
async fn scan(
    tables: &Tables,
    table: &str,
    mut each: impl FnMut(Item) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut start: Option<Item> = None;
    loop {
        let out = tables
            .client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| Error::call("Scan", table, e))?;
        for item in out.items() {
            each(item.clone())?;
        }
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return Ok(()),
        }
    }
}

/// Writes the tables to `out`: the header, then every record. The counts
/// of each kind.
pub async fn export(
    tables: &Tables,
    out: &mut dyn Write,
    progress: Progress<'_>,
) -> Result<BTreeMap<String, u64>, Error> {
    // The records go to a scratch file first: the header, which comes
    // first, carries their counts.
    let mut body = tempfile_in_tmp()?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut done = 0u64;
    let mut put = |r: Record, body: &mut std::fs::File| -> Result<(), Error> {
        body.write_all(r.line().as_bytes())
            .map_err(io("writing the scratch file"))?;
        *counts.entry(r.kind().to_string()).or_default() += 1;
        done += 1;
        if done.is_multiple_of(5_000) {
            progress(done, 0);
        }
        Ok(())
    };
    let (messages, users, groups) = (
        tables.name(&MESSAGES),
        tables.name(&USERS),
        tables.name(&GROUPS),
    );
    // Memberships, marks and cursors first, messages last: every mark
    // points at a message stored before it was written, which the later
    // message scan sees, so no mark is past its conversation's newest
    // exported id.
    let mut claims: HashMap<(String, String), (String, u64)> = HashMap::new();
    let mut stored_claims: Vec<((String, String), (String, u64))> = Vec::new();
    scan(tables, &groups, |item| {
        let sk = item
            .get("sk")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        if sk == GROUP_META {
            let g: GroupMetaItem = from_item(&groups, item)?;
            put(
                Record::Group {
                    group_id: g.group_id,
                    name: g.name,
                    created_by: g.created_by,
                    created_at_ms: g.created_at,
                    admins: g.admins,
                    version: g.version,
                    next_seq: g.next_seq,
                },
                &mut body,
            )
        } else if sk.starts_with(MEMBER_PREFIX) {
            let m: MemberItem = from_item(&groups, item)?;
            put(
                Record::Member {
                    group_id: m.group_id,
                    user_id: m.user_id,
                    joined_at_ms: m.joined_at,
                    seq: m.seq,
                    last_sent: m.last_sent,
                    read_up_to: m.read_up_to,
                    joined_at_id: m.joined_at_id,
                },
                &mut body,
            )
        } else {
            Ok(())
        }
    })
    .await?;
    scan(tables, &users, |item| {
        let sk = item
            .get("sk")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        if sk.starts_with(CONV_PREFIX) {
            let m: MembershipItem = from_item(&users, item)?;
            put(
                Record::Membership {
                    user_id: m.user_id,
                    conversation_id: m.conversation_id,
                    acked_up_to: m.acked_up_to,
                    joined_at_ms: m.joined_at,
                    joined_at_id: m.joined_at_id,
                },
                &mut body,
            )
        } else if let Some(cmid) = sk.strip_prefix(IDEM_PREFIX) {
            // Kept for the message scan: a claim is a record only if the
            // message at its id is the one it names.
            let c: ClaimItem = from_item(&users, item)?;
            // Resends come within minutes: claims of the last day are
            // kept (a week's could not be held in memory).
            let made_at = c.expires_at.saturating_sub(IDEMPOTENCY_TTL_SECS);
            if made_at + CLAIMS_KEPT_SECS < chat_core::time::now_ms() / 1000 {
                return Ok(());
            }
            claims.insert(
                (c.user_id, cmid.to_string()),
                (c.conversation_id, c.message_id),
            );
            Ok(())
        } else if sk.starts_with(DEVICE_PREFIX) {
            let d: DeviceItem = from_item(&users, item)?;
            put(
                Record::Device {
                    user_id: d.user_id,
                    device_id: d.device_id,
                    last_used_ms: d.last_used,
                },
                &mut body,
            )
        } else if let Some(rest) = sk.strip_prefix(CURSOR_PREFIX) {
            let c: CursorItem = from_item(&users, item)?;
            let Some((device, conv)) = rest.split_once('#') else {
                return Err(Error::corrupt(&users, format!("cursor sort key {sk:?}")));
            };
            put(
                Record::Cursor {
                    user_id: c.user_id,
                    device_id: device.to_string(),
                    conversation_id: conv.to_string(),
                    up_to: c.up_to,
                    moved_at_ms: c.moved_at,
                },
                &mut body,
            )
        } else {
            Ok(())
        }
    })
    .await?;
    scan(tables, &messages, |item| {
        let m: MessageItem = from_item(&messages, item)?;
        let key = (m.sender.clone(), m.client_msg_id.clone());
        if claims.get(&key) == Some(&(m.conversation_id.clone(), m.message_id)) {
            claims.remove(&key);
            stored_claims.push((key, (m.conversation_id.clone(), m.message_id)));
        }
        put(
            Record::Message {
                conversation_id: m.conversation_id,
                message_id: m.message_id,
                sender: m.sender,
                client_msg_id: m.client_msg_id,
                text: m.text,
                sent_at_ms: m.sent_at,
            },
            &mut body,
        )
    })
    .await?;
    // A claim whose message was never stored (a send that crashed between
    // its claim and its put), or whose id went to another message since,
    // is not a record.
    for ((sender, client_msg_id), (conversation_id, message_id)) in stored_claims {
        put(
            Record::Idempotency {
                sender,
                client_msg_id,
                conversation_id,
                message_id,
            },
            &mut body,
        )?;
    }
    let header = Record::Header(Header {
        format: EXPORT_FORMAT,
        source: format!("dynamodb {}{} at {}", tables.prefix, "*", tables.endpoint),
        exported_at_ms: chat_core::time::now_ms(),
        counts: counts.clone(),
    });
    out.write_all(header.line().as_bytes())
        .map_err(io("writing the export"))?;
    use std::io::Seek;
    body.seek(std::io::SeekFrom::Start(0))
        .map_err(io("reading the scratch file"))?;
    std::io::copy(&mut body, out).map_err(io("writing the export"))?;
    out.flush().map_err(io("writing the export"))?;
    progress(done, done);
    Ok(counts)
}

fn tempfile_in_tmp() -> Result<std::fs::File, Error> {
    let path = std::env::temp_dir().join(format!(
        "chat-export-{}-{}",
        std::process::id(),
        chat_core::time::now_ms()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io("creating a scratch file"))?;
    // Gone when closed, whatever happens.
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// The item a record becomes, and its table.
fn item(tables: &Tables, r: &Record, now_ms: u64) -> Option<(String, Item)> {
    Some(match r {
        Record::Header(_) => return None,
        Record::Message {
            conversation_id,
            message_id,
            sender,
            client_msg_id,
            text,
            sent_at_ms,
        } => (
            tables.name(&MESSAGES),
            to_item(&MessageItem {
                conversation_id: conversation_id.clone(),
                message_id: *message_id,
                sender: sender.clone(),
                client_msg_id: client_msg_id.clone(),
                text: text.clone(),
                sent_at: *sent_at_ms,
                origin: None,
            }),
        ),
        Record::Idempotency {
            sender,
            client_msg_id,
            conversation_id,
            message_id,
        } => (
            tables.name(&USERS),
            to_item(&ClaimItem {
                user_id: sender.clone(),
                sk: ClaimItem::sort_key(client_msg_id),
                conversation_id: conversation_id.clone(),
                message_id: *message_id,
                expires_at: now_ms / 1000 + IDEMPOTENCY_TTL_SECS,
            }),
        ),
        Record::Membership {
            user_id,
            conversation_id,
            acked_up_to,
            joined_at_ms,
            joined_at_id,
        } => (
            tables.name(&USERS),
            to_item(&MembershipItem {
                user_id: user_id.clone(),
                sk: MembershipItem::sort_key(conversation_id),
                conversation_id: conversation_id.clone(),
                acked_up_to: *acked_up_to,
                joined_at: *joined_at_ms,
                joined_at_id: *joined_at_id,
            }),
        ),
        Record::Device {
            user_id,
            device_id,
            last_used_ms,
        } => (
            tables.name(&USERS),
            to_item(&DeviceItem {
                user_id: user_id.clone(),
                sk: DeviceItem::sort_key(device_id),
                device_id: device_id.clone(),
                last_used: *last_used_ms,
                expires_at: last_used_ms.saturating_add(CURSOR_TTL_MS) / 1000,
            }),
        ),
        Record::Cursor {
            user_id,
            device_id,
            conversation_id,
            up_to,
            moved_at_ms,
        } => (
            tables.name(&USERS),
            to_item(&CursorItem {
                user_id: user_id.clone(),
                sk: CursorItem::sort_key(device_id, conversation_id),
                up_to: *up_to,
                moved_at: *moved_at_ms,
                expires_at: moved_at_ms.saturating_add(CURSOR_TTL_MS) / 1000,
            }),
        ),
        Record::Group {
            group_id,
            name,
            created_by,
            created_at_ms,
            admins,
            version,
            next_seq,
        } => (
            tables.name(&GROUPS),
            to_item(&GroupMetaItem {
                group_id: group_id.clone(),
                sk: GROUP_META.to_string(),
                name: name.clone(),
                created_by: created_by.clone(),
                created_at: *created_at_ms,
                admins: admins.clone(),
                version: *version,
                next_seq: *next_seq,
            }),
        ),
        Record::Member {
            group_id,
            user_id,
            joined_at_ms,
            seq,
            last_sent,
            read_up_to,
            joined_at_id,
        } => (
            tables.name(&GROUPS),
            to_item(&MemberItem {
                group_id: group_id.clone(),
                sk: MemberItem::sort_key(user_id),
                user_id: user_id.clone(),
                joined_at: *joined_at_ms,
                seq: *seq,
                joined_at_id: *joined_at_id,
                last_sent: *last_sent,
                read_up_to: *read_up_to,
            }),
        ),
    })
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// Records written by this run, by kind.
    pub loaded: BTreeMap<String, u64>,
    /// Lines an earlier run had written (resumed after), 0 if none.
    pub resumed_after_line: u64,
    /// Where the checkpoint is kept.
    pub checkpoint: PathBuf,
    /// BatchWriteItem calls, and items DynamoDB sent back unprocessed.
    pub batches: u64,
    pub unprocessed: u64,
}

/// The checkpoint of importing `input` into the tables of `prefix`.
pub fn checkpoint_path(input: &Path, prefix: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}.import-{}.progress",
        input.display(),
        if prefix.is_empty() { "-" } else { prefix }
    ))
}

/// Loads the stream at `input` into the tables.
pub async fn import(
    tables: &Tables,
    input: &Path,
    progress: Progress<'_>,
) -> Result<ImportReport, Error> {
    let file = std::fs::File::open(input).map_err(io(&input.display().to_string()))?;
    let mut reader =
        Reader::new(std::io::BufReader::new(file)).map_err(|e| Error::Transfer(e.to_string()))?;
    let header = serde_json::to_string(reader.header()).unwrap_or_default();
    let total: u64 = reader
        .header()
        .counts
        .values()
        .fold(0, |a, b| a.saturating_add(*b));
    let checkpoint = checkpoint_path(input, &tables.prefix);
    let earlier = match std::fs::read_to_string(&checkpoint) {
        Ok(text) => match text.split_once('\n') {
            Some((h, line)) if h == header => line.trim().parse::<u64>().ok(),
            _ => {
                return Err(Error::Transfer(format!(
                    "{} is the checkpoint of another stream: remove it to import {}",
                    checkpoint.display(),
                    input.display()
                )))
            }
        },
        Err(_) => None,
    };
    if earlier.is_none() {
        for spec in [MESSAGES, USERS, GROUPS] {
            let name = tables.name(&spec);
            let out = tables
                .client
                .scan()
                .table_name(&name)
                .limit(1)
                .send()
                .await
                .map_err(|e| Error::call("Scan", &name, e))?;
            if out.count() > 0 {
                return Err(Error::Transfer(format!(
                    "table {name} already holds data: import into empty tables (an import moves data; it does not merge), or resume an import with its checkpoint file"
                )));
            }
        }
    }
    let earlier = earlier.unwrap_or(1);
    // Before the first write: from here on, a re-run resumes (the tables
    // are no longer empty).
    save(&checkpoint, &header, earlier)?;
    let mut report = ImportReport {
        resumed_after_line: if earlier > 1 { earlier } else { 0 },
        checkpoint: checkpoint.clone(),
        ..Default::default()
    };
    let now = chat_core::time::now_ms();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending: Vec<(String, Item)> = Vec::new();
    let mut done = 0u64;
    // The line of the last record queued (what a checkpoint records).
    let mut last = earlier;
    while let Some(record) = reader
        .next_record()
        .map_err(|e| Error::Transfer(e.to_string()))?
    {
        let line = reader.line();
        *seen.entry(record.kind().to_string()).or_default() += 1;
        done += 1;
        if line <= earlier {
            continue;
        }
        last = line;
        *report.loaded.entry(record.kind().to_string()).or_default() += 1;
        if let Some(it) = item(tables, &record, now) {
            pending.push(it);
        }
        if pending.len() == BATCH_ITEMS * 20 {
            write_all(tables, std::mem::take(&mut pending), &mut report).await?;
            save(&checkpoint, &header, line)?;
            progress(done, total);
        }
    }
    write_all(tables, pending, &mut report).await?;
    save(&checkpoint, &header, last)?;
    progress(done, total);
    for (kind, want) in &reader.header().counts {
        let got = seen.get(kind).copied().unwrap_or(0);
        if got != *want {
            return Err(Error::Transfer(format!(
                "the stream ends early: its header counts {want} {kind} records, it holds {got}"
            )));
        }
    }
    Ok(report)
}

fn save(checkpoint: &Path, header: &str, line: u64) -> Result<(), Error> {
    let tmp = PathBuf::from(format!("{}.tmp", checkpoint.display()));
    let mut f = std::fs::File::create(&tmp).map_err(io("writing the checkpoint"))?;
    f.write_all(format!("{header}\n{line}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("writing the checkpoint"))?;
    std::fs::rename(&tmp, checkpoint).map_err(io("writing the checkpoint"))?;
    let dir = checkpoint
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the checkpoint's directory"))
}

/// Writes `items` in batches of 25, sending unprocessed ones again with
/// back-off until every one is written.
async fn write_all(
    tables: &Tables,
    items: Vec<(String, Item)>,
    report: &mut ImportReport,
) -> Result<(), Error> {
    for chunk in items.chunks(BATCH_ITEMS) {
        let mut requests: HashMap<String, Vec<WriteRequest>> = HashMap::new();
        for (table, item) in chunk {
            let put = PutRequest::builder()
                .set_item(Some(item.clone()))
                .build()
                .map_err(|e| Error::Build(e.to_string()))?;
            requests
                .entry(table.clone())
                .or_default()
                .push(WriteRequest::builder().put_request(put).build());
        }
        let mut round = 0;
        let mut wait = Duration::from_millis(50);
        while !requests.is_empty() {
            report.batches += 1;
            let out = tables
                .client
                .batch_write_item()
                .set_request_items(Some(requests))
                .send()
                .await
                .map_err(|e| Error::call("BatchWriteItem", "(import)", e))?;
            requests = out.unprocessed_items().cloned().unwrap_or_default();
            requests.retain(|_, v| !v.is_empty());
            if requests.is_empty() {
                break;
            }
            report.unprocessed += requests.values().map(|v| v.len() as u64).sum::<u64>();
            round += 1;
            if round > MAX_ROUNDS {
                return Err(Error::Transfer("DynamoDB kept items unprocessed for 30 rounds: try again later (the import resumes)".into()));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
    Ok(())
}
