//! The group-commit writer: one thread takes every write waiting in its
//! queue, applies them in one transaction and commits with one fsync
//! (redb: `Durability::Immediate`; fjall: the journal, `SyncData`); only then does each caller get its answer.
//! So a send is acknowledged only after its own data is on disk, and
//! concurrent sends share the fsync. The queue is bounded: when the disk
//! falls behind, callers wait (backpressure) instead of piling up memory.

use crate::health::{Health, Slot};
use crate::kv::Batch;
use chat_core::ports::StoredMessage;
use chat_core::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

/// Most writes applied in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// What the writer's queue carries.
pub(crate) enum Job {
    Write(WriteOp),
    /// Try to write again (the store cannot, since a commit failed):
    /// open the file again and commit a probe (crate::health).
    Probe,
}

/// What one write did inside a batch.
pub(crate) struct Applied {
    done: Completion,
    /// It failed part-way: the batch must not commit.
    poisoned: bool,
    /// A newly appended message, for the commit feed.
    appended: Option<StoredMessage>,
}

pub(crate) type WriteOp = Box<dyn FnOnce(&mut Batch<'_>) -> Applied + Send>;

/// Wraps `f` as a queued write; the receiver answers after the commit.
/// `f` must check before it writes: an `Err` other than `Error::Store`
/// must leave the transaction untouched, since it commits with others.
pub(crate) fn op<R, F>(f: F) -> (WriteOp, oneshot::Receiver<Result<R>>)
where
    R: Send + 'static,
    F: FnOnce(&mut Batch<'_>) -> Result<(R, Option<StoredMessage>)> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<Result<R>>();
    let op: WriteOp = Box::new(move |batch| {
        let (r, appended) = match f(batch) {
            Ok((r, appended)) => (Ok(r), appended),
            Err(e) => (Err(e), None),
        };
        let poisoned = matches!(r, Err(Error::Store(_)));
        let done: Completion = Box::new(move |commit| {
            let _ = tx.send(match commit {
                Ok(()) => r,
                Err(e) => Err(e),
            });
        });
        Applied {
            done,
            poisoned,
            appended,
        }
    });
    (op, rx)
}

/// Hands a durable message to the feed, waiting for room (delivery's
/// backpressure slows commits down), unless the store is closing or
/// nobody listens any more.
fn feed_one(feed: &mpsc::Sender<StoredMessage>, mut c: StoredMessage, closing: &AtomicBool) {
    loop {
        match feed.try_send(c) {
            Ok(()) | Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(back)) => {
                if closing.load(Ordering::Relaxed) {
                    return;
                }
                c = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The group-commit loop: one transaction and one fsync per batch. Runs
/// until every sender of `rx` is gone. Each durable message goes to `feed`.
/// A failed commit (or a transaction that cannot begin) makes the store
/// not writable ([`Health::fail`]): its batch is answered `unavailable`,
/// later writes are dropped unanswered (their callers learn why from the
/// store's health), and each [`Job::Probe`] tries to recover.
pub(crate) fn run(
    slot: &Slot,
    health: &Health,
    mut rx: mpsc::Receiver<Job>,
    feed: Option<mpsc::Sender<StoredMessage>>,
    closing: &AtomicBool,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = Vec::new();
        let mut probe = false;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(op) => ops.push(op),
                Job::Probe => probe = true,
            }
            if ops.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if health.has_failed() {
            drop(ops);
            if probe {
                recover(slot, health);
            }
            continue;
        }
        if ops.is_empty() {
            continue;
        }
        let batch = ops.len();
        let started = std::time::Instant::now();
        let Some(engine) = slot.get() else {
            drop(ops);
            continue;
        };
        let mut txn = match engine.begin() {
            Ok(t) => t,
            Err(e) => {
                chat_core::metrics::store_error("commit");
                health.fail(&e);
                // Nothing ran; every caller's answer channel closes.
                drop(ops);
                continue;
            }
        };
        let mut completions = Vec::with_capacity(batch);
        let mut appended = Vec::new();
        let mut poisoned = false;
        let mut tables = txn.batch();
        for op in ops {
            let a = op(&mut tables);
            poisoned |= a.poisoned;
            completions.push(a.done);
            appended.extend(a.appended);
        }
        // Closes the tables: the transaction commits (or aborts) after.
        drop(tables);
        let applied = started.elapsed();
        let outcome = if poisoned {
            // A write failed part-way; keep the whole batch off disk. If it
            // was the disk (redb refuses every transaction after an I/O
            // error), the store cannot write: the same as a failed commit.
            txn.abort();
            match engine.begin() {
                Ok(probe) => {
                    probe.abort();
                    Err(Failed::Batch)
                }
                Err(e) => Err(Failed::Commit(e)),
            }
        } else {
            txn.commit().map_err(Failed::Commit)
        };
        drop(engine);
        chat_core::metrics::commit_batch(batch);
        chat_core::metrics::commit_phases(applied, started.elapsed().saturating_sub(applied));
        match (&outcome, &feed) {
            (Err(Failed::Commit(e)), _) => {
                chat_core::metrics::store_error("commit");
                tracing::error!(error = %e, batch, "group commit failed");
                health.fail(e);
            }
            (Err(Failed::Batch), _) => {
                chat_core::metrics::store_error("commit");
                tracing::error!(batch, "a write failed part-way; the batch was not stored");
            }
            (Ok(()), Some(feed)) => {
                tracing::trace!(batch, "group commit");
                for c in appended {
                    feed_one(feed, c, closing);
                }
            }
            (Ok(()), None) => tracing::trace!(batch, "group commit"),
        }
        for done in completions {
            done(match &outcome {
                Ok(()) => Ok(()),
                Err(Failed::Batch) => Err(Error::Store(
                    "a write in this batch failed; nothing was stored".into(),
                )),
                Err(Failed::Commit(e)) => {
                    Err(Error::Unavailable(format!("the store cannot write ({e})")))
                }
            });
        }
    }
    tracing::debug!("embedded store writer stopped");
}

/// Why a batch was not stored.
enum Failed {
    /// One of its writes failed part-way (it was aborted).
    Batch,
    /// The commit failed: the store cannot write until it recovers.
    Commit(String),
}

/// Opens the file again and commits a probe; writable again if it lands.
fn recover(slot: &Slot, health: &Health) {
    let attempt = slot.reopen().and_then(|()| match slot.get() {
        Some(engine) => engine.probe(),
        None => Err("the data is not open".into()),
    });
    match attempt {
        Ok(()) => health.recovered(),
        Err(e) => {
            tracing::debug!(error = %e, "the store still cannot write");
            health.fail(&e);
        }
    }
}
