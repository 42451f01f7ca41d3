//! Delivery in a cluster: a connection of this node is posted in process
//! (its hub), another node's through that node's `@connections` API with
//! the same adapter the Lambda functions use for API Gateway (one HTTP
//! client per node, so recipients on one node share its connection pool),
//! and a node known dead is skipped (its janitors delete its records).

use super::Cluster;
use crate::hub::Hub;
use async_trait::async_trait;
use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use std::sync::Arc;
use std::time::Instant;

pub struct ClusterDelivery {
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    /// Posts to other nodes (SigV4-signed with the cluster credential).
    remote: Arc<dyn Delivery>,
}

impl ClusterDelivery {
    pub fn new(hub: Arc<Hub>, cluster: Arc<Cluster>, remote: Arc<dyn Delivery>) -> Self {
        ClusterDelivery {
            hub,
            cluster,
            remote,
        }
    }
}

#[async_trait]
impl Delivery for ClusterDelivery {
    async fn post(&self, c: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError> {
        match c.node_id.as_deref() {
            Some(n) if n == self.hub.node() => {
                let t = Instant::now();
                let r = self.hub.post(c, frame).await;
                chat_core::metrics::delivery_post("local", t.elapsed());
                r
            }
            Some(n) if !self.cluster.may_reach(n) => {
                chat_core::metrics::cluster_post("dead");
                Err(PostError::Failed(format!("node {n} is dead")))
            }
            Some(_) if c.endpoint.starts_with("http") => {
                let t = Instant::now();
                let r = self.remote.post(c, frame).await;
                chat_core::metrics::delivery_post("remote", t.elapsed());
                chat_core::metrics::cluster_post(match &r {
                    Ok(()) => "ok",
                    Err(PostError::Gone) => "gone",
                    Err(PostError::Failed(_)) => "failed",
                });
                r
            }
            // A node without a management API (not in cluster mode), or a
            // record from before nodes had ids: only its holder can post.
            _ => self.hub.post(c, frame).await,
        }
    }
}
