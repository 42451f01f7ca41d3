//! Test doubles the services' unit tests share: a fan-out that keeps its
//! jobs, a reply that keeps its frames, one that is gone, and the services
//! over a given store.

use super::*;
use crate::memory::{MemoryConnections, MemoryStore};
use std::sync::Mutex;

/// The services over `store` (and an in-memory connection map), with the
/// fan-out jobs they dispatch.
pub(super) fn chat_over(store: Arc<MemoryStore>, messages: MessageDelivery) -> (Chat, Arc<Jobs>) {
    let jobs = Arc::new(Jobs::default());
    let chat = Chat::new(
        store,
        Arc::new(MemoryConnections::new()),
        jobs.clone(),
        messages,
    );
    (chat, jobs)
}

/// Keeps the fan-out jobs the services dispatch.
#[derive(Default)]
pub(super) struct Jobs(pub(super) Mutex<Vec<FanoutJob>>);

#[async_trait]
impl Fanout for Jobs {
    async fn dispatch(&self, job: FanoutJob) -> Result<()> {
        self.0.lock().unwrap().push(job);
        Ok(())
    }
}

/// Keeps the frames answered to the caller.
#[derive(Default)]
pub(super) struct Answers(pub(super) Mutex<Vec<ServerFrame>>);

#[async_trait]
impl Reply for Answers {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError> {
        self.0.lock().unwrap().push(frame);
        Ok(())
    }
}

/// A caller that is gone: every frame fails to reach it.
pub(super) struct Gone;

#[async_trait]
impl Reply for Gone {
    async fn send(&self, _: ServerFrame) -> Result<(), PostError> {
        Err(PostError::Gone)
    }
}
