//! chat-embedded: the embedded durable store of conn-tier: redb, one file
//! in the data directory, with the key layout of the DynamoDB tables
//! (docs/design.md, "Data model"), so both stores behave alike. It mirrors
//! `functions/dynamo`: one module per entity.
//!
//! Writes go through one writer thread that **group-commits** ([`writer`]):
//! every write waiting in its bounded queue goes into one transaction and
//! one fsync, and each caller gets its answer only after that commit. Ids
//! are allocated inside the transaction from a per-conversation counter, so
//! they are gapless and become visible atomically, in order. Reads use
//! redb's MVCC read transactions and never wait for the writer.
//!
//! # Layout
//! - this file: [`EmbeddedStore`], opening, the write queue;
//! - `writer`: the group-commit loop;
//! - `batch`: the tables of one group commit, opened once for all its writes;
//! - `tables`: table definitions and record bodies;
//! - `messages`, `memberships`, `groups`, `quotas`, `devices`: each entity's reads and
//!   writes, and its port's impl ([`MessageStore`] and so on);
//! - [`error`]: the crate's error enum.

mod batch;
mod devices;
pub mod error;
mod groups;
mod memberships;
mod messages;
mod quotas;
mod tables;
mod writer;

pub use error::Error;

use batch::Batch;
use chat_core::ports::*;
use chat_core::Result;
use redb::{Database, ReadableDatabase};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tables::*;
use tokio::sync::mpsc;

/// Writes waiting for the writer before callers wait for room.
const WRITE_QUEUE: usize = 4096;

/// The embedded [`Store`].
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Option<mpsc::Sender<writer::WriteOp>>,
    /// Joined on drop, so the file is released when the store is gone.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set on drop: the writer stops waiting for room in the commit feed.
    closing: Arc<AtomicBool>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/chat.redb` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::start(dir, None)
    }

    /// As [`EmbeddedStore::open`], with a commit feed: every newly appended
    /// message, once it is durable, in commit order (so in id order within a
    /// conversation), holding at most `bound` undelivered messages (then
    /// commits wait). The embedded counterpart of the DynamoDB stream that
    /// feeds `fanout`: delivering from it lets concurrent sends to one
    /// conversation share a group commit without ever reaching a reader out
    /// of order.
    pub fn open_with_feed(
        dir: &Path,
        bound: usize,
    ) -> Result<(Self, mpsc::Receiver<StoredMessage>), Error> {
        let (tx, rx) = mpsc::channel(bound.max(1));
        Ok((Self::start(dir, Some(tx))?, rx))
    }

    fn start(dir: &Path, feed: Option<mpsc::Sender<StoredMessage>>) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating data directory {}", dir.display()),
            source,
        })?;
        let path = dir.join("chat.redb");
        let db = match Database::create(&path) {
            Ok(db) => Arc::new(db),
            Err(source @ redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Locked { path, source })
            }
            Err(e) => return Err(Error::db(e)),
        };
        let txn = db.begin_write().map_err(Error::db)?;
        {
            txn.open_table(MESSAGES).map_err(Error::db)?;
            txn.open_table(LAST_ID).map_err(Error::db)?;
            txn.open_table(IDEMPOTENCY).map_err(Error::db)?;
            txn.open_table(USERS).map_err(Error::db)?;
            txn.open_table(GROUPS).map_err(Error::db)?;
            txn.open_table(GROUP_MEMBERS).map_err(Error::db)?;
            txn.open_table(QUOTAS).map_err(Error::db)?;
            txn.open_table(DEVICES).map_err(Error::db)?;
            txn.open_table(CURSORS).map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
        let (tx, rx) = mpsc::channel::<writer::WriteOp>(WRITE_QUEUE);
        let wdb = db.clone();
        let closing = Arc::new(AtomicBool::new(false));
        let flag = closing.clone();
        let thread = std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || writer::run(&wdb, rx, feed, &flag))
            .map_err(|source| Error::Io {
                context: "starting the store writer thread".into(),
                source,
            })?;
        tracing::info!(path = %path.display(), "embedded store open");
        Ok(EmbeddedStore {
            db,
            writer: Some(tx),
            thread: Some(thread),
            closing,
        })
    }

    /// Runs `f` in the next group commit; answers after the commit's fsync.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> Result<R> + Send + 'static,
    {
        self.queue(move |batch| f(batch).map(|r| (r, None)))
            .await?
            .await
            .map_err(|_| chat_core::Error::from(Error::WriterStopped))?
    }

    /// Puts a write in the writer's queue (waiting for room), so writes keep
    /// their call order; the receiver answers after the commit.
    async fn queue<R, F>(&self, f: F) -> Result<tokio::sync::oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> Result<(R, Option<StoredMessage>)> + Send + 'static,
    {
        let (op, rx) = writer::op(f);
        let sender = self
            .writer
            .as_ref()
            .ok_or_else(|| chat_core::Error::from(Error::WriterStopped))?;
        sender
            .send(op)
            .await
            .map_err(|_| chat_core::Error::from(Error::WriterStopped))?;
        Ok(rx)
    }

    fn read<R>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<R>) -> Result<R> {
        let txn = self.db.begin_read().map_err(db)?;
        f(&txn)
    }
}

impl Drop for EmbeddedStore {
    /// Closes the write queue and waits for the writer to finish its batch,
    /// so the data file is released when the store is dropped.
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.writer.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::contract::Fixture;

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        Fixture {
            store,
            keep: Some(Box::new(dir)),
        }
    }

    chat_core::store_contract!(fixture());

    fn message(text: &str) -> NewMessage {
        NewMessage {
            conversation_id: "dm#a#b".into(),
            sender: "a".into(),
            client_msg_id: text.into(),
            text: text.into(),
            sent_at_ms: 1,
            enroll: vec!["b".into()],
            origin: None,
            member_only: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            s.append(message("kept")).await.unwrap();
        }
        // Dropping the store joined its writer: the file is free again.
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            s.messages_after("dm#a#b", 0, 10).await.unwrap()[0].text,
            "kept"
        );
        assert_eq!(s.last_message_id("dm#a#b").await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_open_of_the_same_file_names_it_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let err = EmbeddedStore::open(dir.path()).err().expect("locked");
        let text = err.to_string();
        assert!(text.contains("chat.redb"), "{text}");
        assert!(text.contains("--data-dir"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_every_kind_sharing_one_commit_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        // Hold the writer in a first batch, so everything below is queued
        // meanwhile and shares the next one (and its open tables).
        let blocker = {
            let s = s.clone();
            tokio::spawn(async move {
                s.write(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let member = |u: &str, seq| GroupMember {
            user_id: u.into(),
            joined_at_ms: 1,
            seq,
        };
        let group = Group {
            group_id: "g1".into(),
            name: "g".into(),
            created_by: "a".into(),
            created_at_ms: 1,
            admins: vec!["a".into()],
            members: vec![member("a", 0), member("b", 1)],
            version: 1,
            next_seq: 2,
        };
        let first = s.append_queued(message("one")).await.unwrap();
        let second = s.append_queued(message("two")).await.unwrap();
        let (created, quota, quota_again, watermark) = tokio::join!(
            s.create_group(&group),
            s.take_quota("a", "k", 1, 0),
            s.take_quota("a", "k", 1, 0),
            s.advance_watermark("b", "dm#a#b", 2),
        );
        blocker.await.unwrap().unwrap();
        assert_eq!(first.await.unwrap().message.message_id, 1);
        assert_eq!(second.await.unwrap().message.message_id, 2);
        created.unwrap();
        // One unit: exactly one of the two takes got it.
        assert!(quota.unwrap() ^ quota_again.unwrap());
        // `b` was enrolled by the first message, in the same commit.
        assert_eq!(
            watermark.unwrap(),
            Some(Watermark {
                before: 0,
                after: 2
            })
        );
        let changed = s
            .update_group(&GroupChange {
                group_id: "g1".into(),
                expected_version: 1,
                admins: vec!["a".into()],
                add: vec![(member("c", 2), 0)],
                remove: vec!["b".into()],
            })
            .await
            .unwrap();
        assert_eq!(changed.version, 2);
        // Everything is on disk: read back after reopening.
        drop(s);
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(s.last_message_id("dm#a#b").await.unwrap(), 2);
        let g = s.group("g1").await.unwrap().unwrap();
        let members: Vec<_> = g.members.iter().map(|m| m.user_id.as_str()).collect();
        assert_eq!(members, ["a", "c"]);
        assert!(s.membership("c", "grp#g1").await.unwrap().is_some());
        assert!(s.membership("b", "grp#g1").await.unwrap().is_none());
        assert_eq!(
            s.membership("b", "dm#a#b")
                .await
                .unwrap()
                .unwrap()
                .acked_up_to,
            2
        );
        assert!(!s.take_quota("a", "k", 1, 0).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_commit_feed_carries_durable_messages_in_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let (s, mut feed) = EmbeddedStore::open_with_feed(dir.path(), 4).unwrap();
        let s = Arc::new(s);
        let mut acks = Vec::new();
        for i in 0..3 {
            acks.push(s.append_queued(message(&format!("m{i}"))).await.unwrap());
        }
        for a in acks {
            a.await.unwrap();
        }
        for want in 1..=3 {
            let c = feed.recv().await.unwrap();
            assert_eq!(c.message_id, want);
        }
        // A resend is not fed again.
        s.append(message("m0")).await.unwrap();
        assert!(feed.try_recv().is_err());
    }
}
