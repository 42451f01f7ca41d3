//! The embedded durable store: redb, one file in the data directory, with
//! the key layout of DESIGN.md §5.
//!
//! Writes go through one writer thread that **group-commits**: it takes
//! every write waiting in its queue, applies them in one transaction and
//! commits with one fsync (`Durability::Immediate`); only then does each
//! caller get its answer. So a send is acknowledged only after its own data
//! is on disk, and concurrent sends share the fsync. Ids are allocated
//! inside the transaction from a per-conversation counter, so they are
//! gapless and become visible atomically, in order.
//!
//! Reads use redb's MVCC read transactions and never wait for the writer.

use crate::error::Error as StoreErr;
use async_trait::async_trait;
use chat_core::ports::*;
use chat_core::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// messages: (conversation_id, message_id) -> MessageBody
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// conversation_id -> newest message_id (the id allocator)
const LAST_ID: TableDefinition<&str, u64> = TableDefinition::new("conversation_last_id");
/// (sender, client_msg_id) -> (conversation_id, message_id): idempotency
const IDEMPOTENCY: TableDefinition<(&str, &str), (&str, u64)> = TableDefinition::new("idempotency");
/// users: (user_id, conversation_id) -> MembershipBody
const USERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("users");
/// groups: group_id -> GroupBody (name, admins, version)
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// group members: (group_id, user_id) -> GroupMember
const GROUP_MEMBERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("group_members");

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 512;

#[derive(Serialize, Deserialize)]
struct MessageBody {
    sender: String,
    client_msg_id: String,
    text: String,
    sent_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct MembershipBody {
    acked_up_to: u64,
    joined_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct GroupBody {
    name: String,
    created_by: String,
    created_at_ms: u64,
    admins: Vec<String>,
    version: u64,
    next_seq: u64,
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What one write did inside a batch.
struct Applied {
    done: Completion,
    /// It failed part-way: the batch must not commit.
    poisoned: bool,
    /// A newly appended message, for the commit feed.
    appended: Option<Committed>,
}

type WriteOp = Box<dyn FnOnce(&WriteTransaction) -> Applied + Send>;

/// A message that is on disk, in commit order: what the commit feed carries.
#[derive(Debug, Clone)]
pub struct Committed {
    pub message: StoredMessage,
    /// The sending connection (it got the `ack` and needs no copy).
    pub origin: Option<String>,
}

/// The embedded [`Store`].
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: mpsc::Sender<WriteOp>,
    /// Taken once by whoever delivers messages ([`EmbeddedStore::commit_feed`]).
    feed: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Committed>>>,
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| StoreErr::Corrupt(e.to_string()).into())
}

fn db<E: Into<redb::Error>>(e: E) -> Error {
    StoreErr::db(e).into()
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/chat.redb` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreErr> {
        std::fs::create_dir_all(dir).map_err(|source| StoreErr::Io {
            context: format!("creating data directory {}", dir.display()),
            source,
        })?;
        let path = dir.join("chat.redb");
        let db = Arc::new(Database::create(&path).map_err(StoreErr::db)?);
        let txn = db.begin_write().map_err(StoreErr::db)?;
        {
            txn.open_table(MESSAGES).map_err(StoreErr::db)?;
            txn.open_table(LAST_ID).map_err(StoreErr::db)?;
            txn.open_table(IDEMPOTENCY).map_err(StoreErr::db)?;
            txn.open_table(USERS).map_err(StoreErr::db)?;
            txn.open_table(GROUPS).map_err(StoreErr::db)?;
            txn.open_table(GROUP_MEMBERS).map_err(StoreErr::db)?;
        }
        txn.commit().map_err(StoreErr::db)?;
        let (tx, rx) = mpsc::channel::<WriteOp>();
        let (feed_tx, feed_rx) = tokio::sync::mpsc::unbounded_channel();
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || writer_loop(&wdb, rx, feed_tx))
            .map_err(|source| StoreErr::Io {
                context: "starting the store writer thread".into(),
                source,
            })?;
        tracing::info!(path = %path.display(), "embedded store open");
        Ok(EmbeddedStore {
            db,
            writer: tx,
            feed: std::sync::Mutex::new(Some(feed_rx)),
        })
    }

    /// Every newly appended message, once it is durable, in commit order
    /// (so in id order within a conversation): the embedded counterpart of
    /// the DynamoDB stream that feeds `fanout`. Delivering from here lets
    /// concurrent sends to one conversation share a group commit without
    /// ever reaching a reader out of order. Can be taken once.
    pub fn commit_feed(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Committed>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Runs `f` in the next group commit; answers after the commit's fsync.
    /// `f` must check before it writes: an `Err` other than `Error::Store`
    /// must leave the transaction untouched, since it commits with others.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    {
        self.write_feeding(move |txn| f(txn).map(|r| (r, None)))
            .await
    }

    /// As [`Self::write`], for a write that may append a message to the feed.
    async fn write_feeding<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<(R, Option<Committed>)> + Send + 'static,
    {
        self.queue(f)?
            .await
            .map_err(|_| Error::from(StoreErr::WriterStopped))?
    }

    /// Puts a write in the writer's queue now (so writes keep their call
    /// order); the receiver answers after the commit.
    fn queue<R, F>(&self, f: F) -> Result<oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<(R, Option<Committed>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let op: WriteOp = Box::new(move |txn| {
            let (r, appended) = match f(txn) {
                Ok((r, appended)) => (Ok(r), appended),
                Err(e) => (Err(e), None),
            };
            let poisoned = matches!(r, Err(Error::Store(_)));
            let done: Completion = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => r,
                    Err(e) => Err(Error::Store(e)),
                });
            });
            Applied {
                done,
                poisoned,
                appended,
            }
        });
        self.writer
            .send(op)
            .map_err(|_| Error::from(StoreErr::WriterStopped))?;
        Ok(rx)
    }

    fn read<R>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<R>) -> Result<R> {
        let txn = self.db.begin_read().map_err(db)?;
        f(&txn)
    }
}

/// The group-commit loop: one transaction and one fsync per batch.
fn writer_loop(
    db: &Database,
    rx: mpsc::Receiver<WriteOp>,
    feed: tokio::sync::mpsc::UnboundedSender<Committed>,
) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let batch = ops.len();
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "cannot begin write transaction");
                // Nothing ran; every caller gets the failure.
                for op in ops {
                    drop(op);
                }
                continue;
            }
        };
        let mut completions = Vec::with_capacity(batch);
        let mut appended = Vec::new();
        let mut poisoned = false;
        for op in ops {
            let a = op(&txn);
            poisoned |= a.poisoned;
            completions.push(a.done);
            appended.extend(a.appended);
        }
        let outcome = if poisoned {
            // A write failed part-way; keep the whole batch off disk.
            let _ = txn.abort();
            Err("a write in this batch failed; nothing was stored".to_string())
        } else {
            txn.commit().map_err(|e| e.to_string())
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, batch, "group commit failed");
        } else {
            tracing::trace!(batch, "group commit");
            // Durable now; nobody listening is fine.
            for c in appended {
                let _ = feed.send(c);
            }
        }
        for done in completions {
            done(outcome.clone());
        }
    }
    tracing::debug!("embedded store writer stopped");
}

fn put_membership(
    txn: &WriteTransaction,
    user: &str,
    conv: &str,
    at: u64,
    acked: u64,
) -> Result<()> {
    let mut users = txn.open_table(USERS).map_err(db)?;
    let current = match users.get((user, conv)).map_err(db)? {
        Some(v) => Some(dec::<MembershipBody>(v.value())?),
        None => None,
    };
    let body = match current {
        Some(m) if m.acked_up_to >= acked => return Ok(()),
        Some(m) => MembershipBody {
            acked_up_to: acked,
            joined_at_ms: m.joined_at_ms,
        },
        None => MembershipBody {
            acked_up_to: acked,
            joined_at_ms: at,
        },
    };
    users
        .insert((user, conv), enc(&body).as_slice())
        .map_err(db)?;
    Ok(())
}

fn read_message(conv: &str, id: u64, body: &[u8]) -> Result<StoredMessage> {
    let b: MessageBody = dec(body)?;
    Ok(StoredMessage {
        conversation_id: conv.to_string(),
        message_id: id,
        sender: b.sender,
        client_msg_id: b.client_msg_id,
        text: b.text,
        sent_at_ms: b.sent_at_ms,
    })
}

fn read_group<
    T: ReadableTable<&'static str, &'static [u8]>,
    M: ReadableTable<(&'static str, &'static str), &'static [u8]>,
>(
    groups: &T,
    members: &M,
    group_id: &str,
) -> Result<Option<Group>> {
    let Some(body) = groups.get(group_id).map_err(db)? else {
        return Ok(None);
    };
    let body: GroupBody = dec(body.value())?;
    let mut list = Vec::new();
    for row in members
        .range((group_id, "")..(group_id, "\u{7f}"))
        .map_err(db)?
    {
        let (_, v) = row.map_err(db)?;
        list.push(dec::<GroupMember>(v.value())?);
    }
    list.sort_by_key(|m| m.seq);
    Ok(Some(Group {
        group_id: group_id.to_string(),
        name: body.name,
        created_by: body.created_by,
        created_at_ms: body.created_at_ms,
        admins: body.admins,
        members: list,
        version: body.version,
        next_seq: body.next_seq,
    }))
}

fn write_group_body(txn: &WriteTransaction, g: &Group) -> Result<()> {
    let body = GroupBody {
        name: g.name.clone(),
        created_by: g.created_by.clone(),
        created_at_ms: g.created_at_ms,
        admins: g.admins.clone(),
        version: g.version,
        next_seq: g.next_seq,
    };
    txn.open_table(GROUPS)
        .map_err(db)?
        .insert(g.group_id.as_str(), enc(&body).as_slice())
        .map_err(db)?;
    Ok(())
}

/// The append itself, inside a write transaction: the idempotency check,
/// the next id, the message, the sender's watermark, the enrollments.
fn append_in(txn: &WriteTransaction, msg: NewMessage) -> Result<(Appended, Option<Committed>)> {
    {
        let idem = txn.open_table(IDEMPOTENCY).map_err(db)?;
        let hit = idem
            .get((msg.sender.as_str(), msg.client_msg_id.as_str()))
            .map_err(db)?
            .map(|g| {
                let (c, id) = g.value();
                (c.to_string(), id)
            });
        if let Some((conv, id)) = hit {
            let messages = txn.open_table(MESSAGES).map_err(db)?;
            let body = messages
                .get((conv.as_str(), id))
                .map_err(db)?
                .ok_or_else(|| {
                    Error::from(StoreErr::Corrupt(format!(
                        "idempotency record points at missing {conv}/{id}"
                    )))
                })?;
            let message = read_message(&conv, id, body.value())?;
            return Ok((
                Appended {
                    message,
                    duplicate: true,
                },
                None,
            ));
        }
    }
    let conv = msg.conversation_id.as_str();
    let id = {
        let mut last = txn.open_table(LAST_ID).map_err(db)?;
        let id = last.get(conv).map_err(db)?.map_or(0, |g| g.value()) + 1;
        last.insert(conv, id).map_err(db)?;
        id
    };
    let body = MessageBody {
        sender: msg.sender.clone(),
        client_msg_id: msg.client_msg_id.clone(),
        text: msg.text,
        sent_at_ms: msg.sent_at_ms,
    };
    txn.open_table(MESSAGES)
        .map_err(db)?
        .insert((conv, id), enc(&body).as_slice())
        .map_err(db)?;
    txn.open_table(IDEMPOTENCY)
        .map_err(db)?
        .insert(
            (msg.sender.as_str(), msg.client_msg_id.as_str()),
            (conv, id),
        )
        .map_err(db)?;
    put_membership(txn, &msg.sender, conv, msg.sent_at_ms, id)?;
    for u in &msg.enroll {
        put_membership(txn, u, conv, msg.sent_at_ms, 0)?;
    }
    let message = StoredMessage {
        conversation_id: msg.conversation_id.clone(),
        message_id: id,
        sender: body.sender,
        client_msg_id: body.client_msg_id,
        text: body.text,
        sent_at_ms: body.sent_at_ms,
    };
    let committed = Committed {
        message: message.clone(),
        origin: msg.origin.clone(),
    };
    Ok((
        Appended {
            message,
            duplicate: false,
        },
        Some(committed),
    ))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, msg: NewMessage) -> Result<Appended> {
        self.write_feeding(move |txn| append_in(txn, msg)).await
    }

    async fn append_queued(
        &self,
        msg: NewMessage,
    ) -> Result<futures_util::future::BoxFuture<'static, Result<Appended>>> {
        let rx = self.queue(move |txn| append_in(txn, msg))?;
        Ok(Box::pin(async move {
            rx.await.map_err(|_| Error::from(StoreErr::WriterStopped))?
        }))
    }

    async fn messages_after(
        &self,
        conv: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.read(|txn| {
            let t = txn.open_table(MESSAGES).map_err(db)?;
            let mut out = Vec::new();
            for row in t
                .range((conv, after.saturating_add(1))..=(conv, u64::MAX))
                .map_err(db)?
                .take(limit)
            {
                let (k, v) = row.map_err(db)?;
                out.push(read_message(conv, k.value().1, v.value())?);
            }
            Ok(out)
        })
    }

    async fn messages_before(
        &self,
        conv: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.read(|txn| {
            let t = txn.open_table(MESSAGES).map_err(db)?;
            let upper = before.unwrap_or(u64::MAX);
            let mut out = Vec::new();
            let mut rows = t.range((conv, 0u64)..(conv, upper)).map_err(db)?.rev();
            for row in rows.by_ref().take(limit) {
                let (k, v) = row.map_err(db)?;
                out.push(read_message(conv, k.value().1, v.value())?);
            }
            let has_more = rows.next().is_some();
            out.reverse();
            Ok(HistoryPage {
                messages: out,
                has_more,
            })
        })
    }

    async fn last_message_id(&self, conv: &str) -> Result<u64> {
        self.read(|txn| {
            let t = txn.open_table(LAST_ID).map_err(db)?;
            Ok(t.get(conv).map_err(db)?.map_or(0, |g| g.value()))
        })
    }

    async fn membership(&self, user: &str, conv: &str) -> Result<Option<Membership>> {
        self.read(|txn| {
            let t = txn.open_table(USERS).map_err(db)?;
            match t.get((user, conv)).map_err(db)? {
                None => Ok(None),
                Some(v) => {
                    let b: MembershipBody = dec(v.value())?;
                    Ok(Some(Membership {
                        conversation_id: conv.to_string(),
                        acked_up_to: b.acked_up_to,
                        joined_at_ms: b.joined_at_ms,
                    }))
                }
            }
        })
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationState>> {
        self.read(|txn| {
            let users = txn.open_table(USERS).map_err(db)?;
            let last = txn.open_table(LAST_ID).map_err(db)?;
            let mut out = Vec::new();
            for row in users.range((user, "")..(user, "\u{7f}")).map_err(db)? {
                let (k, v) = row.map_err(db)?;
                let conv = k.value().1.to_string();
                let b: MembershipBody = dec(v.value())?;
                let last_message_id = last
                    .get(conv.as_str())
                    .map_err(db)?
                    .map_or(0, |g| g.value());
                out.push(ConversationState {
                    membership: Membership {
                        conversation_id: conv,
                        acked_up_to: b.acked_up_to,
                        joined_at_ms: b.joined_at_ms,
                    },
                    last_message_id,
                });
            }
            Ok(out)
        })
    }

    async fn advance_watermark(
        &self,
        user: &str,
        conv: &str,
        up_to: u64,
    ) -> Result<Option<(u64, bool)>> {
        let (user, conv) = (user.to_string(), conv.to_string());
        self.write(move |txn| {
            let mut users = txn.open_table(USERS).map_err(db)?;
            let current = match users.get((user.as_str(), conv.as_str())).map_err(db)? {
                None => return Ok(None),
                Some(v) => dec::<MembershipBody>(v.value())?,
            };
            if up_to <= current.acked_up_to {
                return Ok(Some((current.acked_up_to, false)));
            }
            let body = MembershipBody {
                acked_up_to: up_to,
                joined_at_ms: current.joined_at_ms,
            };
            users
                .insert((user.as_str(), conv.as_str()), enc(&body).as_slice())
                .map_err(db)?;
            Ok(Some((up_to, true)))
        })
        .await
    }

    async fn group(&self, group_id: &str) -> Result<Option<Group>> {
        self.read(|txn| {
            let groups = txn.open_table(GROUPS).map_err(db)?;
            let members = txn.open_table(GROUP_MEMBERS).map_err(db)?;
            read_group(&groups, &members, group_id)
        })
    }

    async fn create_group(&self, group: &Group) -> Result<()> {
        let group = group.clone();
        self.write(move |txn| {
            if txn
                .open_table(GROUPS)
                .map_err(db)?
                .get(group.group_id.as_str())
                .map_err(db)?
                .is_some()
            {
                return Err(Error::Conflict);
            }
            write_group_body(txn, &group)?;
            let conv = format!("grp#{}", group.group_id);
            let mut members = txn.open_table(GROUP_MEMBERS).map_err(db)?;
            for m in &group.members {
                members
                    .insert(
                        (group.group_id.as_str(), m.user_id.as_str()),
                        enc(m).as_slice(),
                    )
                    .map_err(db)?;
            }
            drop(members);
            for m in &group.members {
                put_membership(txn, &m.user_id, &conv, m.joined_at_ms, 0)?;
            }
            Ok(())
        })
        .await
    }

    async fn update_group(&self, change: &GroupChange) -> Result<Group> {
        let change = change.clone();
        self.write(move |txn| {
            let current = {
                let groups = txn.open_table(GROUPS).map_err(db)?;
                let members = txn.open_table(GROUP_MEMBERS).map_err(db)?;
                read_group(&groups, &members, &change.group_id)?
            };
            let Some(current) = current else {
                return Err(Error::NotFound("no such group".into()));
            };
            if current.version != change.expected_version {
                return Err(Error::Conflict);
            }
            let updated = chat_core::service::apply_group_change(current, &change);
            write_group_body(txn, &updated)?;
            let gid = change.group_id.as_str();
            let conv = format!("grp#{gid}");
            {
                let mut members = txn.open_table(GROUP_MEMBERS).map_err(db)?;
                for u in &change.remove {
                    members.remove((gid, u.as_str())).map_err(db)?;
                }
                for (m, _) in &change.add {
                    members
                        .insert((gid, m.user_id.as_str()), enc(m).as_slice())
                        .map_err(db)?;
                }
            }
            {
                let mut users = txn.open_table(USERS).map_err(db)?;
                for u in &change.remove {
                    users.remove((u.as_str(), conv.as_str())).map_err(db)?;
                }
            }
            for (m, acked) in &change.add {
                put_membership(txn, &m.user_id, &conv, m.joined_at_ms, *acked)?;
            }
            Ok(updated)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::contract::store_checks;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        for (name, check) in store_checks() {
            eprintln!("check {name}");
            check(s.clone()).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            s.append(NewMessage {
                conversation_id: "dm#a#b".into(),
                sender: "a".into(),
                client_msg_id: "c1".into(),
                text: "kept".into(),
                sent_at_ms: 1,
                enroll: vec!["b".into()],
                origin: None,
            })
            .await
            .unwrap();
        }
        // The old writer thread still holds the file until its channel closes.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            s.messages_after("dm#a#b", 0, 10).await.unwrap()[0].text,
            "kept"
        );
        assert_eq!(s.last_message_id("dm#a#b").await.unwrap(), 1);
    }
}
