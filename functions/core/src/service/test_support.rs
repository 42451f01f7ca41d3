//! Test doubles the services' unit tests share: a fan-out that keeps its
//! jobs, and a reply that keeps its frames.

use super::*;
use std::sync::Mutex;

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
