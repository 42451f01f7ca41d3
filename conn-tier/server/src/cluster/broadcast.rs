//! Broadcast in a cluster (docs/design.md, "Group look-ups"): a large
//! group's frame goes to this node's own connections of its members from
//! the hub's memory, and once to every other live node (`POST /@broadcast`
//! on its management API, signed with the cluster credential), which does
//! the same with its own. No connection is looked up in the store: the
//! cost is one listing of the node registry per frame, and one post per
//! other node instead of one per remote connection.
//!
//! The registry is read for every broadcast, not taken from the janitor's
//! last listing: a node that joined since then may already hold a member's
//! connection, and that connection must get the frame. A node waits until
//! the registry lists it before it takes connections
//! ([`super::Cluster::join`]).
//!
//! The post itself goes through a [`NodeLink`]: [`SignedPost`] in a real
//! cluster, a simulated network's in conn-tier/sim.

use super::Cluster;
use crate::hub::Hub;
use async_trait::async_trait;
use axum::body::Body;
use chat_core::ports::{Broadcast, NodeRecord, Outgoing};
use chat_management::api::{BroadcastRequest, BROADCAST_PATH};
use chat_management::sigv4::{amz_date, now_secs, sign_headers, Credential};
use futures_util::future::join_all;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// A post to another node that takes longer is given up (the members
/// there miss this frame live, and get it from their next gap read or
/// sync), so a hung node never holds up a group's later messages longer.
const POST_TIMEOUT: Duration = Duration::from_secs(3);

/// How a broadcast reaches another node: a seam, so that the cluster
/// simulation (conn-tier/sim) carries it over its simulated network.
#[async_trait]
pub trait NodeLink: Send + Sync {
    /// Hands `body` (a [`BroadcastRequest`]'s JSON, made once for every
    /// node) to `node`; how many of its connections took the frame, or why
    /// it failed.
    async fn post(&self, node: &NodeRecord, body: &[u8]) -> Result<usize, String>;
}

pub struct ClusterBroadcast {
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    link: Arc<dyn NodeLink>,
}

impl ClusterBroadcast {
    pub fn new(hub: Arc<Hub>, cluster: Arc<Cluster>, link: Arc<dyn NodeLink>) -> Self {
        ClusterBroadcast { hub, cluster, link }
    }
}

/// `POST /@broadcast` on a node's management API, signed with the cluster
/// credential.
pub struct SignedPost {
    /// What every node's management API checks.
    credential: Credential,
    /// Shared by the posts to every node (keeps their connections).
    client: Client<HttpConnector, Body>,
}

impl SignedPost {
    pub fn new(credential: Credential) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(POST_TIMEOUT));
        SignedPost {
            credential,
            client: Client::builder(TokioExecutor::new()).build(http),
        }
    }
}

#[async_trait]
impl NodeLink for SignedPost {
    async fn post(&self, node: &NodeRecord, body: &[u8]) -> Result<usize, String> {
        let url = format!(
            "{}{BROADCAST_PATH}",
            node.management_url.trim_end_matches('/')
        );
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut http = hyper::Request::post(uri.clone());
        for (k, v) in sign_headers(
            &self.credential,
            "POST",
            &host,
            uri.path(),
            body,
            &amz_date(now_secs()),
            "us-east-1",
        ) {
            http = http.header(k, v);
        }
        let http = http
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .map_err(|e| e.to_string())?;
        let call = async {
            let response = self.client.request(http).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = axum::body::to_bytes(Body::new(response.into_body()), 64 * 1024)
                .await
                .map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            #[derive(serde::Deserialize)]
            struct Posted {
                posted: usize,
            }
            serde_json::from_slice::<Posted>(&bytes)
                .map(|p| p.posted)
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(POST_TIMEOUT, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {POST_TIMEOUT:?}")),
        }
    }
}

#[async_trait]
impl Broadcast for ClusterBroadcast {
    async fn broadcast(
        &self,
        users: &[String],
        except: Option<&str>,
        frame: &Outgoing,
    ) -> chat_core::Result<usize> {
        // First, so that a registry that cannot be read leaves the frame
        // to the look-ups, which reach every node.
        let nodes = self.cluster.live_nodes_listed().await?;
        let me = self.hub.node();
        let body = serde_json::to_vec(&BroadcastRequest {
            users: users.to_vec(),
            except: except.map(str::to_string),
            frame: frame.text().to_string(),
        })
        .map_err(|e| chat_core::Error::Store(e.to_string()))?;
        let others = nodes
            .iter()
            .filter(|n| n.node_id != me && !n.management_url.is_empty());
        let remote = join_all(others.map(|n| async {
            let r = self.link.post(n, &body).await;
            chat_core::metrics::broadcast(if r.is_ok() { "node_ok" } else { "node_failed" });
            if let Err(e) = &r {
                tracing::warn!(node = %n.node_id, error = %e, "broadcast to a node failed");
            }
            r.unwrap_or(0)
        }));
        // This node's own connections: what the hub alone does.
        let local = Broadcast::broadcast(self.hub.as_ref(), users, except, frame).await?;
        Ok(local + remote.await.into_iter().sum::<usize>())
    }
}
