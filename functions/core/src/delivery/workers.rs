//! Fan-out runners: [`InProcessFanout`] (background workers owned by a
//! [`Tasks`] group; conn-tier) and [`InlineFanout`] (delivers before
//! returning; the Lambda functions and unit tests).

use super::{shard_of, Deliverer};
use crate::error::{Error, Result};
use crate::ports::{Fanout, FanoutJob};
use crate::tasks::Tasks;
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
    /// Starts the workers in `tasks` (they stop when it shuts down).
    /// `queue` bounds each shard's backlog; a full queue makes `dispatch`
    /// wait (backpressure on senders) rather than grow without limit.
    pub fn spawn(deliverer: Arc<Deliverer>, shards: usize, queue: usize, tasks: &Tasks) -> Self {
        let shards = (0..shards.max(1))
            .map(|shard| {
                let (tx, mut rx) = mpsc::channel::<FanoutJob>(queue.max(1));
                let d = deliverer.clone();
                tasks.spawn(move |stop| async move {
                    loop {
                        let job = tokio::select! {
                            _ = stop.cancelled() => break,
                            job = rx.recv() => match job {
                                Some(job) => job,
                                None => break,
                            },
                        };
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
        let shard = shard_of(&job.order_key, self.shards.len());
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
