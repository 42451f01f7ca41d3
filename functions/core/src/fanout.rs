//! Fan-out runners: [`InProcessFanout`] (background tasks, conn-tier),
//! [`InlineFanout`] (delivers before returning; Lambda's `fanout` function
//! and unit tests) and [`FeedFedFanout`] (messages come from a store feed).

use crate::error::{Error, Result};
use crate::ports::{Fanout, FanoutJob};
use crate::service::{fnv1a, Deliverer};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Background fan-out: `shards` worker tasks, each draining its own queue
/// in order. A job goes to the shard of its `order_key`, so one
/// conversation's frames are delivered in the order they were queued while
/// different conversations proceed in parallel.
pub struct InProcessFanout {
    shards: Vec<mpsc::Sender<FanoutJob>>,
}

impl InProcessFanout {
    /// Spawns the workers on the current tokio runtime. `queue` bounds each
    /// shard's backlog; a full queue makes `dispatch` wait (backpressure on
    /// senders) rather than grow without limit.
    pub fn spawn(deliverer: Arc<Deliverer>, shards: usize, queue: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|shard| {
                let (tx, mut rx) = mpsc::channel::<FanoutJob>(queue.max(1));
                let d = deliverer.clone();
                tokio::spawn(async move {
                    while let Some(job) = rx.recv().await {
                        if let Err(e) = d.run(&job).await {
                            tracing::warn!(shard, error = %e, "fan-out job failed");
                        }
                    }
                });
                tx
            })
            .collect();
        InProcessFanout { shards }
    }
}

#[async_trait]
impl Fanout for InProcessFanout {
    async fn dispatch(&self, job: FanoutJob) -> Result<()> {
        let shard = (fnv1a(&job.order_key) % self.shards.len() as u64) as usize;
        self.shards[shard]
            .send(job)
            .await
            .map_err(|_| Error::Store("fan-out workers have stopped".into()))
    }
}

/// Delivers each job before `dispatch` returns.
pub struct InlineFanout(pub Arc<Deliverer>);

#[async_trait]
impl Fanout for InlineFanout {
    async fn dispatch(&self, job: FanoutJob) -> Result<()> {
        self.0.run(&job).await.map(|_| ())
    }
}

/// For stores whose change feed drives message delivery (DynamoDB's stream
/// into the `fanout` function, the embedded store's commit feed in
/// conn-tier): message frames are left to the feed, in commit order; every
/// other frame (receipts, group changes) goes to `others`.
pub struct FeedFedFanout(pub Arc<dyn Fanout>);

#[async_trait]
impl Fanout for FeedFedFanout {
    async fn dispatch(&self, job: FanoutJob) -> Result<()> {
        if matches!(job.frame, crate::protocol::ServerFrame::Message(_)) {
            return Ok(());
        }
        self.0.dispatch(job).await
    }
}
