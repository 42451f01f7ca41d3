//! A connection's outbound queue, bounded in bytes: what waits to be
//! written to its socket, live messages and answers alike, never holds more
//! than the limit (4 MiB by default). A live frame that would pass it marks
//! the connection too slow (it is closed with 1008); an answer to the
//! client's own request waits for room, up to a deadline, then does the
//! same. So a client that never reads costs the server a bounded amount of
//! memory, whatever it asks for.
//!
//! The queue is a `VecDeque` that allocates on the first frame and is
//! freed again once drained after a burst: an idle connection holds none
//! of it. (tokio's unbounded channel allocated a 32-slot block up front,
//! 2.8 KB per connection with its header, a fifth of an idle connection's
//! memory: docs/benchmarks.md (c).)
//!
//! # Layout
//! - this file: the queue ([`outbox`], [`Outbox`], [`Inbox`]);
//! - `item`: its item, [`Outbound`], and how each producer makes one;
//! - `tests`: the queue's unit tests.

mod item;

pub use item::Outbound;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// A drained queue with more capacity than this is freed.
const KEEP_CAPACITY: usize = 4;

/// The sending half, shared by the hub (live frames) and the socket's own
/// answers.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving half, owned by the socket's writer.
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
    /// Frames taken from the shared queue in one lock (the two buffers
    /// trade places), handed out one by one.
    taken: VecDeque<Outbound>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Something was queued, or the last sender left: the writer looks.
    ready: Notify,
    /// Bytes queued and not yet taken by the writer.
    bytes: AtomicUsize,
    limit: usize,
    /// The writer took something: room may have freed.
    room: Notify,
    /// The queue overflowed: the connection is too slow and closes with
    /// 1008 (the reader stops reading, the writer sends the close).
    slow: Flag,
    /// When the peer last sent a frame (ms after the connection's start):
    /// the reader sets it, the writer's idle check reads it. Here, not in
    /// an allocation of its own.
    seen_ms: AtomicU64,
    /// Answers the reader owes ([`Outbox::answer_due`]): the sequencer
    /// tells a gap that is one of the connection's own sends, its ack
    /// still on the way, from a message missing.
    answers_due: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Outbound>,
    /// Outbox handles alive; at 0 the writer's `recv` ends.
    senders: usize,
    /// The writer is gone: nothing more is taken.
    closed: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection too slow and wakes whoever waits: the reader
    /// (on the flag) and the writer (on `ready`, so it needs no second
    /// future for this: see [`Inbox::next`]).
    fn mark_slow(&self) {
        self.slow.set();
        self.ready.notify_one();
    }
}

/// A flag set once, with waiters: what a `CancellationToken` does, kept in
/// the queue's own allocation (a token allocates a node of its own, about
/// 100 B per connection).
#[derive(Debug, Default)]
struct Flag {
    set: AtomicBool,
    wake: Notify,
}

impl Flag {
    fn set(&self) {
        if !self.set.swap(true, Ordering::SeqCst) {
            self.wake.notify_waiters();
        }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is set.
    async fn wait(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before the look, so a `set` in between wakes it.
            woken.as_mut().enable();
            if self.is_set() {
                return;
            }
            woken.await;
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The writer is gone.
    Closed,
    /// The limit would be passed: the connection is being closed as too slow.
    Overflow,
}

/// A queue holding at most `limit` bytes of frames.
pub fn outbox(limit: usize) -> (Outbox, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            senders: 1,
            ..Queue::default()
        }),
        ready: Notify::new(),
        bytes: AtomicUsize::new(0),
        limit: limit.max(1),
        room: Notify::new(),
        slow: Flag::default(),
        seen_ms: AtomicU64::new(0),
        answers_due: AtomicU64::new(0),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        Inbox {
            shared,
            taken: VecDeque::new(),
        },
    )
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.queue().senders += 1;
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut q = self.shared.queue();
            q.senders -= 1;
            q.senders == 0
        };
        if last {
            self.shared.ready.notify_one();
        }
    }
}

impl Outbox {
    /// Queues `out` at once, or marks the connection too slow.
    pub fn push(&self, out: Outbound) -> Result<(), Full> {
        let len = out.bytes();
        let s = &self.shared;
        if s.slow.is_set() || (len > 0 && s.bytes.load(Ordering::Relaxed) + len > s.limit) {
            s.mark_slow();
            return Err(Full::Overflow);
        }
        self.push_unchecked(out, len)
    }

    pub async fn push_when_room(&self, out: Outbound, patience: Duration) -> Result<(), Full> {
        let len = out.bytes();
        let s = &self.shared;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let room = s.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if s.slow.is_set() {
                return Err(Full::Overflow);
            }
            if len == 0 || s.bytes.load(Ordering::Relaxed) + len <= s.limit {
                return self.push_unchecked(out, len);
            }
            if s.queue().closed {
                return Err(Full::Closed);
            }
            tokio::select! {
                _ = room => {}
                _ = s.slow.wait() => return Err(Full::Overflow),
                _ = tokio::time::sleep_until(deadline) => {
                    s.mark_slow();
                    return Err(Full::Overflow);
                }
            }
        }
    }

    fn push_unchecked(&self, out: Outbound, len: usize) -> Result<(), Full> {
        {
            let mut q = self.shared.queue();
            if q.closed {
                return Err(Full::Closed);
            }
            q.frames.push_back(out);
            self.shared.bytes.fetch_add(len, Ordering::Relaxed);
        }
        self.shared.ready.notify_one();
        chat_core::metrics::outbound_bytes(len as f64);
        Ok(())
    }

    pub fn kick(&self) {
        self.shared.mark_slow();
    }

    /// Resolves once the connection is marked too slow.
    pub async fn kicked(&self) {
        self.shared.slow.wait().await
    }

    /// The peer sent a frame, `ms` after the connection started.
    pub fn saw_peer(&self, ms: u64) {
        self.shared.seen_ms.store(ms, Ordering::Relaxed);
    }

    /// The reader owes the peer one more answer: counted when the backend
    /// hands back the answer's future. With the embedded store that is
    /// before the send in it is committed (the write is only queued); with
    /// DynamoDB the send is already stored by then, so a message that
    /// overtakes its ack is read from the store as before (correct, only
    /// not spared). The answer itself is queued as [`Outbound::Ack`] or
    /// [`Outbound::Answer`], and the sequencer counts those as written.
    pub fn answer_due(&self) {
        self.shared.answers_due.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// The byte limit.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }
}

/// What the writer takes next ([`Inbox::next`]).
#[derive(Debug)]
pub enum Next {
    Frame(Outbound),
    /// The connection is too slow: close it with 1008, write nothing more.
    Slow,
    /// Every [`Outbox`] is gone and the queue is empty.
    Done,
}

impl Inbox {
    /// The next frame, unless the connection was marked too slow first:
    /// one wait for both, so the writer's idle state holds one future for
    /// them, not two.
    pub async fn next(&mut self) -> Next {
        loop {
            if self.shared.slow.is_set() {
                return Next::Slow;
            }
            match self.take() {
                Ok(out) => return Next::Frame(out),
                Err(true) => return Next::Done,
                Err(false) => {}
            }
            // A push or a kick after this look leaves a permit in `ready`
            // (one waiter, `notify_one`), so it is not missed. Awaited after
            // the `match`, not in its arm: the arm would keep the match's
            // value (72 B) in every idle writer's future.
            self.shared.ready.notified().await;
        }
    }

    /// The next frame, slow or not; `None` once every [`Outbox`] is gone
    /// and the queue is empty.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            match self.take() {
                Ok(out) => return Some(out),
                Err(true) => return None,
                // A push after this look leaves a permit in `ready` (one
                // waiter, `notify_one`), so it is not missed.
                Err(false) => self.shared.clone().ready.notified().await,
            }
        }
    }

    /// When the peer last sent a frame ([`Outbox::saw_peer`]).
    pub fn peer_seen_ms(&self) -> u64 {
        self.shared.seen_ms.load(Ordering::Relaxed)
    }

    /// Answers the reader has owed so far ([`Outbox::answer_due`]).
    pub fn answers_due(&self) -> u64 {
        self.shared.answers_due.load(Ordering::Relaxed)
    }

    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.take().ok()
    }

    /// The next frame, or whether the queue is empty for good.
    fn take(&mut self) -> Result<Outbound, bool> {
        if self.taken.is_empty() {
            let mut q = self.shared.queue();
            if q.frames.is_empty() {
                return Err(q.senders == 0);
            }
            std::mem::swap(&mut q.frames, &mut self.taken);
        }
        let out = self.taken.pop_front().ok_or(false)?;
        if self.taken.is_empty() && self.taken.capacity() > KEEP_CAPACITY {
            self.taken = VecDeque::new();
        }
        self.shared.bytes.fetch_sub(out.bytes(), Ordering::Relaxed);
        chat_core::metrics::outbound_bytes(-(out.bytes() as f64));
        self.shared.room.notify_waiters();
        Ok(out)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let left: usize = {
            let mut q = self.shared.queue();
            q.closed = true;
            let left = q.frames.iter().chain(&self.taken).map(|o| o.bytes()).sum();
            q.frames = VecDeque::new();
            left
        };
        if left > 0 {
            self.shared.bytes.fetch_sub(left, Ordering::Relaxed);
            chat_core::metrics::outbound_bytes(-(left as f64));
        }
        // A sender waiting for room learns the writer is gone.
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
