//! A connection's outbound queue, bounded in bytes: what waits to be
//! written to its socket, live messages and answers alike, never holds more
//! than the limit (4 MiB by default). A live frame that would pass it marks
//! the connection too slow (it is closed with 1008); an answer to the
//! client's own request waits for room, up to a deadline, then does the
//! same. So a client that never reads costs the server a bounded amount of
//! memory, whatever it asks for.

use crate::hub::Outbound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// The sending half, shared by the hub (live frames) and the socket's own
/// answers.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outbound>,
    shared: Arc<Shared>,
}

/// The receiving half, owned by the socket's writer.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Outbound>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Bytes queued and not yet taken by the writer.
    bytes: AtomicUsize,
    limit: usize,
    /// The writer took something: room may have freed.
    room: Notify,
    /// The queue overflowed: the connection is too slow and closes with
    /// 1008 (the reader stops reading, the writer sends the close).
    slow: CancellationToken,
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
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        bytes: AtomicUsize::new(0),
        limit: limit.max(1),
        room: Notify::new(),
        slow: CancellationToken::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        Inbox { rx, shared },
    )
}

impl Outbox {
    /// Queues `out` at once, or marks the connection too slow.
    pub fn push(&self, out: Outbound) -> Result<(), Full> {
        let len = out.bytes();
        let s = &self.shared;
        if s.slow.is_cancelled() || (len > 0 && s.bytes.load(Ordering::Relaxed) + len > s.limit) {
            s.slow.cancel();
            return Err(Full::Overflow);
        }
        s.bytes.fetch_add(len, Ordering::Relaxed);
        self.tx.send(out).map_err(|_| {
            s.bytes.fetch_sub(len, Ordering::Relaxed);
            Full::Closed
        })?;
        chat_core::metrics::outbound_bytes(len as f64);
        Ok(())
    }

    /// Queues `out` once there is room, waiting at most `patience`; past
    /// it, marks the connection too slow.
    pub async fn push_when_room(&self, out: Outbound, patience: Duration) -> Result<(), Full> {
        let len = out.bytes();
        let s = &self.shared;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let room = s.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if s.slow.is_cancelled() {
                return Err(Full::Overflow);
            }
            if len == 0 || s.bytes.load(Ordering::Relaxed) + len <= s.limit {
                return self.push_unchecked(out, len);
            }
            if self.tx.is_closed() {
                return Err(Full::Closed);
            }
            tokio::select! {
                _ = room => {}
                _ = s.slow.cancelled() => return Err(Full::Overflow),
                _ = tokio::time::sleep_until(deadline) => {
                    s.slow.cancel();
                    return Err(Full::Overflow);
                }
            }
        }
    }

    fn push_unchecked(&self, out: Outbound, len: usize) -> Result<(), Full> {
        self.shared.bytes.fetch_add(len, Ordering::Relaxed);
        self.tx.send(out).map_err(|_| {
            self.shared.bytes.fetch_sub(len, Ordering::Relaxed);
            Full::Closed
        })?;
        chat_core::metrics::outbound_bytes(len as f64);
        Ok(())
    }

    /// Marks the connection too slow: it is closed with 1008.
    pub fn kick(&self) {
        self.shared.slow.cancel();
    }

    /// Resolves once the connection is marked too slow.
    pub async fn kicked(&self) {
        self.shared.slow.cancelled().await
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

impl Inbox {
    /// The next frame, and room for others.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let out = self.rx.recv().await?;
        self.shared.bytes.fetch_sub(out.bytes(), Ordering::Relaxed);
        chat_core::metrics::outbound_bytes(-(out.bytes() as f64));
        self.shared.room.notify_waiters();
        Some(out)
    }

    /// The next frame if one is queued already: the writer drains what is
    /// ready into one write.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let out = self.rx.try_recv().ok()?;
        self.shared.bytes.fetch_sub(out.bytes(), Ordering::Relaxed);
        chat_core::metrics::outbound_bytes(-(out.bytes() as f64));
        self.shared.room.notify_waiters();
        Some(out)
    }

    /// A handle that resolves when the queue overflowed.
    pub fn kicks(&self) -> Kicks {
        Kicks(self.shared.clone())
    }
}

/// What was still queued when the connection ended leaves the gauge too.
impl Drop for Inbox {
    fn drop(&mut self) {
        self.rx.close();
        let mut left = 0;
        while let Ok(out) = self.rx.try_recv() {
            left += out.bytes();
        }
        if left > 0 {
            self.shared.bytes.fetch_sub(left, Ordering::Relaxed);
            chat_core::metrics::outbound_bytes(-(left as f64));
        }
    }
}

/// Resolves when a connection's queue overflowed (the writer closes 1008).
#[derive(Debug, Clone)]
pub struct Kicks(Arc<Shared>);

impl Kicks {
    pub async fn kicked(&self) {
        self.0.slow.cancelled().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Utf8Bytes;

    fn text(n: usize) -> Outbound {
        Outbound::Text(Utf8Bytes::from("x".repeat(n)))
    }

    #[tokio::test]
    async fn a_live_frame_past_the_byte_limit_overflows_and_nothing_more_is_queued() {
        let (out, mut inbox) = outbox(100);
        out.push(text(60)).unwrap();
        out.push(text(40)).unwrap();
        assert_eq!(out.queued(), 100);
        assert_eq!(out.push(text(1)), Err(Full::Overflow));
        // The overflow is the writer's cue to close.
        tokio::time::timeout(Duration::from_secs(1), inbox.kicks().kicked())
            .await
            .expect("kicked");
        // The writer still drains what was queued; nothing more is taken.
        inbox.recv().await.unwrap();
        assert_eq!(out.queued(), 40);
        assert_eq!(out.push(text(60)), Err(Full::Overflow));
    }

    #[tokio::test]
    async fn room_freed_by_the_writer_takes_a_live_frame() {
        let (out, mut inbox) = outbox(100);
        out.push(text(100)).unwrap();
        inbox.recv().await.unwrap();
        out.push(text(100)).unwrap();
        assert_eq!(out.queued(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_waits_for_room_and_overflows_only_after_its_patience() {
        let (out, mut inbox) = outbox(100);
        out.push(text(100)).unwrap();
        let waiting = {
            let out = out.clone();
            tokio::spawn(async move { out.push_when_room(text(50), Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        inbox.recv().await.unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(out.queued(), 50);
        // Nobody reads: after its patience, the answer gives up and kicks.
        out.push(text(50)).unwrap();
        let r = out.push_when_room(text(10), Duration::from_secs(10)).await;
        assert_eq!(r, Err(Full::Overflow));
        // Once too slow, nothing more is queued, even what would fit.
        inbox.recv().await.unwrap();
        assert_eq!(out.push(text(1)), Err(Full::Overflow));
        let r = out.push_when_room(text(1), Duration::from_secs(10)).await;
        assert_eq!(r, Err(Full::Overflow));
    }
}
