//! The DynamoDB [`Nodes`] registry of a conn-tier cluster, in the
//! connections table: a node is one item ([`NodeItem`]) under the reserved
//! user `#nodes` (so the `by_user` index lists them, a Query), and its
//! connections are found through the sparse `by_node` index (a Query,
//! never a Scan).

use crate::codec::{from_item, n, to_item, NodeItem};
use crate::config::Tables;
use crate::conn_table::ConnectionsTable;
use crate::schema::{BY_NODE_INDEX, BY_USER_INDEX, NODES_USER};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use chat_core::ports::{NodeRecord, Nodes};
use chat_core::Result;

pub struct DynamoNodes {
    table: ConnectionsTable,
}

impl DynamoNodes {
    pub fn new(tables: &Tables) -> Self {
        DynamoNodes {
            table: ConnectionsTable::new(tables),
        }
    }

    /// What this registry's calls cost.
    pub fn meter(&self) -> &std::sync::Arc<crate::meter::Meter> {
        &self.table.meter
    }
}

#[async_trait]
impl Nodes for DynamoNodes {
    async fn join(&self, node: &NodeRecord) -> Result<()> {
        let item = to_item(&NodeItem::new(node));
        if self
            .table
            .put(item, Some("attribute_not_exists(connection_id)"))
            .await?
        {
            Ok(())
        } else {
            Err(chat_core::Error::Store(format!(
                "node id {} is already registered",
                node.node_id
            )))
        }
    }

    async fn heartbeat(&self, node_id: &str, at_ms: u64, draining: bool) -> Result<bool> {
        let update = self
            .table
            .update(&NodeItem::key(node_id))
            .update_expression("SET heartbeat_at = :t, draining = :d, expires_at = :e")
            .condition_expression("attribute_exists(connection_id) AND dead = :no")
            .expression_attribute_values(":t", n(at_ms))
            .expression_attribute_values(":d", Av::Bool(draining))
            .expression_attribute_values(":e", n(NodeItem::expiry(at_ms)))
            .expression_attribute_values(":no", Av::Bool(false));
        self.table.updated(update).await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.table
            .query_index(BY_USER_INDEX, "user_id", NODES_USER)
            .await?
            .into_iter()
            .map(|i| Ok(from_item::<_, NodeItem>(&self.table.name, i)?.record()))
            .collect()
    }

    async fn declare_dead(&self, node_id: &str, seen_heartbeat_ms: u64) -> Result<bool> {
        let update = self
            .table
            .update(&NodeItem::key(node_id))
            .update_expression("SET dead = :yes")
            .condition_expression("heartbeat_at = :seen AND dead = :no")
            .expression_attribute_values(":seen", n(seen_heartbeat_ms))
            .expression_attribute_values(":yes", Av::Bool(true))
            .expression_attribute_values(":no", Av::Bool(false));
        self.table.updated(update).await
    }

    async fn connections_of(&self, node_id: &str) -> Result<Vec<String>> {
        Ok(self
            .table
            .query_index(BY_NODE_INDEX, "node_id", node_id)
            .await?
            .into_iter()
            .filter_map(|i| match i.get("connection_id") {
                Some(Av::S(id)) => Some(id.clone()),
                _ => None,
            })
            .collect())
    }

    async fn forget(&self, node_id: &str) -> Result<()> {
        self.table.delete(&NodeItem::key(node_id)).await
    }
}
