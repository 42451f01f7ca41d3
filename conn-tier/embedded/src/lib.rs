//! chat-embedded: the embedded durable store of conn-tier, in the data
//! directory, with the key layout of the DynamoDB tables (docs/design.md,
//! "Data model"), so both stores behave alike. It mirrors
//! `functions/dynamo`: one module per entity. Two engines keep the data
//! ([`EngineKind`], `--engine`): redb (one file, `chat.redb`, the default)
//! and fjall (an LSM tree, `chat.fjall/`); the entity modules run the same
//! logic over either (`kv`).
//!
//! Writes go through one writer thread that **group-commits** ([`writer`]):
//! every write waiting in its bounded queue goes into one transaction and
//! one fsync, and each caller gets its answer only after that commit. Ids
//! are allocated inside the transaction from a per-conversation counter, so
//! they are gapless and become visible atomically, in order. Reads use
//! the engine's snapshots and never wait for the writer.
//!
//! # Layout
//! - this file: [`EmbeddedStore`], opening, the write queue;
//! - `writer`: the group-commit loop;
//! - `health`: faults as states: the handle opened again after a failed
//!   commit, the free-disk watch ([`Options`]);
//! - `kv`: the engine seam: typed tables over redb or fjall, the tables
//!   of one group commit, snapshots;
//! - `tables`: table definitions and record bodies;
//! - `format`: the file's format version, checked at every open;
//! - [`backup`], [`verify`], [`restore`]: `conn-tier admin`'s backup (one
//!   read transaction, hashed), its check, and putting it in place;
//! - [`export`], [`import`]: the portable stream (`chat_core::export`)
//!   written from a data file and loaded into one;
//! - `messages`, `memberships`, `groups`, `quotas`, `devices`: each entity's reads and
//!   writes, and its port's impl ([`MessageStore`] and so on);
//! - [`error`]: the crate's error enum.

pub mod backup;
mod devices;
pub mod error;
pub mod export;
mod format;
mod groups;
mod health;
pub mod import;
mod kv;
mod memberships;
mod messages;
mod quotas;
pub mod restore;
mod tables;
pub mod verify;
mod writer;

pub use error::Error;
pub use format::FORMAT_VERSION;

use chat_core::ports::*;
pub use chat_core::ports::{Health, StoreHealth};
use chat_core::Result;
use kv::Batch;
pub use kv::EngineKind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Writes waiting for the writer before callers wait for room.
const WRITE_QUEUE: usize = 4096;

/// How the store watches its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Below this much free space on the data directory's file system,
    /// writes are refused (`unavailable`) until there is room again, so
    /// the file is never left at the edge of a full disk. 0 turns it off.
    pub min_free_bytes: u64,
    /// How often the free space is read, and a store that cannot write
    /// tries again.
    pub watch_every: std::time::Duration,
    /// Which engine keeps the data (`--engine`).
    pub engine: EngineKind,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_free_bytes: 64 * 1024 * 1024,
            watch_every: std::time::Duration::from_secs(1),
            engine: EngineKind::default(),
        }
    }
}

/// The embedded [`Store`].
pub struct EmbeddedStore {
    /// The database handle, opened again after a failed commit.
    db: Arc<health::Slot>,
    health: Arc<health::Health>,
    writer: Option<mpsc::Sender<writer::Job>>,
    /// Joined on drop, so the file is released when the store is gone.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The free-space watch (joined on drop).
    watcher: Option<std::thread::JoinHandle<()>>,
    /// Set on drop: the writer stops waiting for room in the commit feed,
    /// the watcher stops.
    closing: Arc<AtomicBool>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/chat.redb` (the default engine) and starts
    /// the writer thread.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::start(dir, None, Options::default())
    }

    /// As [`EmbeddedStore::open`], with the engine and disk watch `options` say.
    pub fn open_with(dir: &Path, options: Options) -> Result<Self, Error> {
        Self::start(dir, None, options)
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
        Self::open_with_feed_options(dir, bound, Options::default())
    }

    /// As [`EmbeddedStore::open_with_feed`], watching the disk as `options` say.
    pub fn open_with_feed_options(
        dir: &Path,
        bound: usize,
        options: Options,
    ) -> Result<(Self, mpsc::Receiver<StoredMessage>), Error> {
        let (tx, rx) = mpsc::channel(bound.max(1));
        Ok((Self::start(dir, Some(tx), options)?, rx))
    }

    fn start(
        dir: &Path,
        feed: Option<mpsc::Sender<StoredMessage>>,
        options: Options,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating data directory {}", dir.display()),
            source,
        })?;
        let kind = options.engine;
        let other = kind.other();
        if dir.join(other.data_name()).exists() {
            // Never the other engine's data, silently beside it.
            return Err(Error::OtherEngine {
                dir: dir.to_path_buf(),
                found: other,
                asked: kind,
            });
        }
        let path = dir.join(kind.data_name());
        let engine = kv::Engine::open(kind, dir)?;
        let db = Arc::new(health::Slot::new(dir.to_path_buf(), engine));
        let health = Arc::new(health::Health::new(options.min_free_bytes));
        if let Some(free) = health::free_bytes(dir) {
            health.set_free(free);
        }
        chat_core::metrics::store_writable(health.report().writable);
        let (tx, rx) = mpsc::channel::<writer::Job>(WRITE_QUEUE);
        let (wdb, whealth) = (db.clone(), health.clone());
        let closing = Arc::new(AtomicBool::new(false));
        let flag = closing.clone();
        let thread = std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || writer::run(&wdb, &whealth, rx, feed, &flag))
            .map_err(|source| Error::Io {
                context: "starting the store writer thread".into(),
                source,
            })?;
        let nudger = tx.clone();
        let watcher = health::watch(
            dir.to_path_buf(),
            health.clone(),
            move || {
                let _ = nudger.try_send(writer::Job::Probe);
            },
            closing.clone(),
            options.watch_every,
        )
        .map_err(|source| Error::Io {
            context: "starting the store's disk watch".into(),
            source,
        })?;
        tracing::info!(path = %path.display(), engine = kind.name(), min_free_bytes = options.min_free_bytes, "embedded store open");
        Ok(EmbeddedStore {
            db,
            health,
            writer: Some(tx),
            thread: Some(thread),
            watcher: Some(watcher),
            closing,
        })
    }

    /// Why a write was not answered: the store's health says (a write
    /// dropped while it cannot write), else the writer stopped.
    fn unanswered(&self) -> chat_core::Error {
        unanswered(&self.health)
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
            .map_err(|_| self.unanswered())?
    }

    /// Puts a write in the writer's queue (waiting for room), so writes keep
    /// their call order; the receiver answers after the commit.
    async fn queue<R, F>(&self, f: F) -> Result<tokio::sync::oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> Result<(R, Option<StoredMessage>)> + Send + 'static,
    {
        // Refused at the door while the store cannot write.
        self.health.check()?;
        let (op, rx) = writer::op(f);
        let sender = self
            .writer
            .as_ref()
            .ok_or_else(|| chat_core::Error::from(Error::WriterStopped))?;
        sender
            .send(writer::Job::Write(op))
            .await
            .map_err(|_| chat_core::Error::from(Error::WriterStopped))?;
        Ok(rx)
    }

    fn read<R>(&self, f: impl FnOnce(&mut kv::Snap) -> Result<R>) -> Result<R> {
        let engine = self.db.get().ok_or_else(|| {
            chat_core::Error::Unavailable("the store is opening its data again".into())
        })?;
        let mut snap = engine.snapshot().map_err(|e| self.read_failed(e.into()))?;
        f(&mut snap).map_err(|e| self.read_failed(e))
    }

    /// A read that failed: `unavailable` while the store cannot write (redb
    /// refuses reads too after an I/O error, until the file is opened
    /// again), else as it failed.
    fn read_failed(&self, e: chat_core::Error) -> chat_core::Error {
        match e {
            chat_core::Error::Store(_) if !self.health.writable() => self.unanswered(),
            e => e,
        }
    }
}

/// See [`EmbeddedStore::unanswered`].
pub(crate) fn unanswered(health: &health::Health) -> chat_core::Error {
    match health.check() {
        Err(e) => e,
        Ok(()) => Error::WriterStopped.into(),
    }
}

impl Health for EmbeddedStore {
    fn health(&self) -> StoreHealth {
        self.health.report()
    }
}

impl Drop for EmbeddedStore {
    /// Closes the write queue and waits for the writer to finish its batch,
    /// so the data file is released when the store is dropped.
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        if let Some(t) = self.watcher.take() {
            // It holds a sender of the writer's queue: stopped first.
            let _ = t.join();
        }
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

    /// The same contract over the other engine.
    mod fjall {
        use super::*;

        async fn fixture() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let options = Options {
                engine: EngineKind::Fjall,
                ..Options::default()
            };
            let store: Arc<dyn Store> =
                Arc::new(EmbeddedStore::open_with(dir.path(), options).unwrap());
            Fixture {
                store,
                keep: Some(Box::new(dir)),
            }
        }

        chat_core::store_contract!(fixture());
    }

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

    const ENGINES: [EngineKind; 2] = [EngineKind::Redb, EngineKind::Fjall];

    fn open(dir: &Path, engine: EngineKind) -> Result<EmbeddedStore, Error> {
        EmbeddedStore::open_with(
            dir,
            Options {
                engine,
                ..Options::default()
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopening() {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = open(dir.path(), engine).unwrap();
                s.append(message("kept")).await.unwrap();
            }
            // Dropping the store joined its writer: the data is free again.
            let s = open(dir.path(), engine).unwrap();
            assert_eq!(
                s.messages_after("dm#a#b", 0, 10).await.unwrap()[0].text,
                "kept"
            );
            assert_eq!(s.last_message_id("dm#a#b").await.unwrap(), 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_open_of_the_same_data_names_it_and_the_flag() {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let _first = open(dir.path(), engine).unwrap();
            let err = open(dir.path(), engine).err().expect("locked");
            let text = err.to_string();
            assert!(text.contains(engine.data_name()), "{text}");
            assert!(text.contains("--data-dir"), "{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_data_directory_of_one_engine_is_refused_by_the_other_untouched() {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            drop(open(dir.path(), engine).unwrap());
            let err = open(dir.path(), engine.other()).err().expect("refused");
            let text = err.to_string();
            assert!(
                text.contains(&format!("--engine {}", engine.name())),
                "{text}"
            );
            assert!(text.contains("export"), "{text}");
            assert!(!dir.path().join(engine.other().data_name()).exists());
            // The data is still there, and opens with its own engine.
            drop(open(dir.path(), engine).unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_every_kind_sharing_one_commit_all_land() {
        for engine in ENGINES {
            writes_of_every_kind_in_one_commit(engine).await;
        }
    }

    async fn writes_of_every_kind_in_one_commit(engine: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open(dir.path(), engine).unwrap());
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
        let member = |u: &str, seq| GroupMember::founding(u, 1, seq);
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
                add: vec![member("c", 2)],
                remove: vec!["b".into()],
            })
            .await
            .unwrap();
        assert_eq!(changed.version, 2);
        // Everything is on disk: read back after reopening.
        drop(s);
        let s = open(dir.path(), engine).unwrap();
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
