//! The bridge from a store's commit feed to fan-out: every durable message,
//! in commit order, becomes a delivery job for its conversation's members
//! (except the sending connection, which got the `ack`). One reader, so
//! each conversation's jobs are queued in id order; the embedded
//! counterpart of the DynamoDB stream that triggers the `fanout` function.

use crate::ports::{Audience, Fanout, FanoutJob, StoredMessage};
use crate::protocol::ServerFrame;
use crate::tasks::Tasks;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The delivery job of one durable message.
pub fn job(m: StoredMessage) -> FanoutJob {
    let conv = m.conversation_id.clone();
    FanoutJob {
        audience: Audience::Conversation(conv.clone()),
        frame: ServerFrame::Message(m.view()),
        except_connection: m.origin,
        order_key: conv,
    }
}

/// Starts the bridge in `tasks`: it reads `feed` until it closes or the
/// group shuts down, and dispatches each message to `fanout`.
pub fn spawn(mut feed: mpsc::Receiver<StoredMessage>, fanout: Arc<dyn Fanout>, tasks: &Tasks) {
    tasks.spawn(move |stop| async move {
        loop {
            let committed = tokio::select! {
                _ = stop.cancelled() => break,
                c = feed.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
            };
            if let Err(e) = fanout.dispatch(job(committed)).await {
                if !stop.is_cancelled() {
                    tracing::error!(error = %e, "fan-out stopped; the commit feed bridge stops");
                }
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<FanoutJob>>);

    #[async_trait]
    impl Fanout for Recorder {
        async fn dispatch(&self, job: FanoutJob) -> crate::Result<()> {
            self.0.lock().unwrap().push(job);
            Ok(())
        }
    }

    #[tokio::test]
    async fn committed_messages_become_jobs_in_commit_order_without_the_origin() {
        let (tx, rx) = mpsc::channel(8);
        let rec = Arc::new(Recorder::default());
        let tasks = Tasks::new();
        spawn(rx, rec.clone(), &tasks);
        for id in 1..=3 {
            tx.send(StoredMessage {
                conversation_id: "dm#a#b".into(),
                message_id: id,
                sender: "a".into(),
                client_msg_id: format!("c{id}"),
                text: "x".into(),
                sent_at_ms: 1,
                origin: Some("conn-a".into()),
            })
            .await
            .unwrap();
        }
        drop(tx);
        for _ in 0..500 {
            if rec.0.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(tasks.shutdown(std::time::Duration::from_secs(5)).await);
        let jobs = rec.0.lock().unwrap();
        let ids: Vec<u64> = jobs
            .iter()
            .map(|j| match &j.frame {
                ServerFrame::Message(m) => m.message_id,
                _ => 0,
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(jobs
            .iter()
            .all(|j| j.except_connection.as_deref() == Some("conn-a")));
        assert_eq!(jobs[0].audience, Audience::Conversation("dm#a#b".into()));
    }
}
