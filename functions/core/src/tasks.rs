//! Owned background tasks. A [`Tasks`] group is held by whoever started the
//! tasks (fan-out workers, the commit-feed bridge, the stream poller); [`Tasks::shutdown`] stops them and waits, and dropping the
//! group tells them to stop (as mini-redis's `DbDropGuard` does). No task is
//! ever detached.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A group of background tasks that stop together.
#[derive(Debug, Default)]
pub struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task(stop)` on the current runtime; the task must return
    /// soon after `stop` is cancelled.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task(self.stop.clone()));
    }

    /// How many tasks are still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Tells every task to stop and waits for them, at most `grace`.
    /// Returns false if some were still running when `grace` ran out.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_and_waits_for_every_task() {
        let tasks = Tasks::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let tx = tx.clone();
            tasks.spawn(move |stop| async move {
                stop.cancelled().await;
                let _ = tx.send(i);
            });
        }
        assert_eq!(tasks.len(), 3);
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert!(tasks.is_empty());
        let mut seen: Vec<i32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn dropping_the_group_tells_its_tasks_to_stop() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn(move |stop| async move {
            stop.cancelled().await;
            let _ = tx.send(());
        });
        drop(tasks);
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the task stopped")
            .unwrap();
    }
}
