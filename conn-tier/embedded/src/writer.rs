//! The group-commit writer: one thread takes every write waiting in its
//! queue, applies them in one transaction and commits with one fsync
//! (`Durability::Immediate`); only then does each caller get its answer.
//! So a send is acknowledged only after its own data is on disk, and
//! concurrent sends share the fsync. The queue is bounded: when the disk
//! falls behind, callers wait (backpressure) instead of piling up memory.

use crate::batch::Batch;
use chat_core::ports::StoredMessage;
use chat_core::{Error, Result};
use redb::Database;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

/// Most writes applied in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

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
                Err(e) => Err(Error::Store(e)),
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
pub(crate) fn run(
    db: &Database,
    mut rx: mpsc::Receiver<WriteOp>,
    feed: Option<mpsc::Sender<StoredMessage>>,
    closing: &AtomicBool,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let batch = ops.len();
        let started = std::time::Instant::now();
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin write transaction");
                // Nothing ran; every caller's answer channel closes.
                drop(ops);
                continue;
            }
        };
        let mut completions = Vec::with_capacity(batch);
        let mut appended = Vec::new();
        let mut poisoned = false;
        let mut tables = Batch::new(&txn);
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
            // A write failed part-way; keep the whole batch off disk.
            let _ = txn.abort();
            Err("a write in this batch failed; nothing was stored".to_string())
        } else {
            txn.commit().map_err(|e| e.to_string())
        };
        chat_core::metrics::commit_batch(batch);
        chat_core::metrics::commit_phases(applied, started.elapsed().saturating_sub(applied));
        match (&outcome, &feed) {
            (Err(e), _) => {
                chat_core::metrics::store_error("commit");
                tracing::error!(error = %e, batch, "group commit failed")
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
            done(outcome.clone());
        }
    }
    tracing::debug!("embedded store writer stopped");
}
