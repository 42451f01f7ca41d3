//! The DynamoDB [`Nodes`] registry of a conn-tier cluster, in the
//! connections table: a node is one item ([`NodeItem`]) under the reserved
//! user `#nodes` (so the `by_user` index lists them, a Query), and its
//! connections are found through the sparse `by_node` index (a Query,
//! never a Scan).

use crate::codec::{from_item, key, to_item, Item, NodeItem};
use crate::config::Tables;
use crate::meter::{item_size, Meter};
use crate::request::{call, conditional, query_pages, Written};
use crate::schema::{BY_NODE_INDEX, BY_USER_INDEX, CONNECTIONS, NODES_USER};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodb::Client;
use chat_core::ports::{NodeRecord, Nodes};
use chat_core::Result;
use std::sync::Arc;

pub struct DynamoNodes {
    client: Client,
    table: String,
    meter: Arc<Meter>,
}

impl DynamoNodes {
    pub fn new(tables: &Tables) -> Self {
        DynamoNodes {
            client: tables.client.clone(),
            table: tables.name(&CONNECTIONS),
            meter: Arc::new(Meter::default()),
        }
    }

    async fn query_all(&self, index: &str, attribute: &str, value: &str) -> Result<Vec<Item>> {
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", attribute)
            .expression_attribute_values(":v", Av::S(value.to_string()));
        // A secondary index has no strongly consistent reads.
        Ok(query_pages(&self.meter, &self.table, q, usize::MAX, false).await?)
    }
}

fn n(v: u64) -> Av {
    Av::N(v.to_string())
}

#[async_trait]
impl Nodes for DynamoNodes {
    async fn join(&self, node: &NodeRecord) -> Result<()> {
        let item = to_item(&NodeItem::new(node));
        self.meter.write(item_size(&item), 1, false);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(connection_id)")
            .send();
        match conditional(&self.meter, "PutItem", &self.table, request).await? {
            Written::Done(_) => Ok(()),
            Written::ConditionFailed(_) => Err(chat_core::Error::Store(format!(
                "node id {} is already registered",
                node.node_id
            ))),
        }
    }

    async fn heartbeat(&self, node_id: &str, at_ms: u64, draining: bool) -> Result<bool> {
        self.meter.write(200, 1, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", &NodeItem::key(node_id))])))
            .update_expression("SET heartbeat_at = :t, draining = :d, expires_at = :e")
            .condition_expression("attribute_exists(connection_id) AND dead = :no")
            .expression_attribute_values(":t", n(at_ms))
            .expression_attribute_values(":d", Av::Bool(draining))
            .expression_attribute_values(":e", n(NodeItem::expiry(at_ms)))
            .expression_attribute_values(":no", Av::Bool(false))
            .send();
        Ok(matches!(
            conditional(&self.meter, "UpdateItem", &self.table, request).await?,
            Written::Done(_)
        ))
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.query_all(BY_USER_INDEX, "user_id", NODES_USER)
            .await?
            .into_iter()
            .map(|i| Ok(from_item::<_, NodeItem>(&self.table, i)?.record()))
            .collect()
    }

    async fn declare_dead(&self, node_id: &str, seen_heartbeat_ms: u64) -> Result<bool> {
        self.meter.write(200, 1, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", &NodeItem::key(node_id))])))
            .update_expression("SET dead = :yes")
            .condition_expression("heartbeat_at = :seen AND dead = :no")
            .expression_attribute_values(":seen", n(seen_heartbeat_ms))
            .expression_attribute_values(":yes", Av::Bool(true))
            .expression_attribute_values(":no", Av::Bool(false))
            .send();
        Ok(matches!(
            conditional(&self.meter, "UpdateItem", &self.table, request).await?,
            Written::Done(_)
        ))
    }

    async fn connections_of(&self, node_id: &str) -> Result<Vec<String>> {
        Ok(self
            .query_all(BY_NODE_INDEX, "node_id", node_id)
            .await?
            .into_iter()
            .filter_map(|i| match i.get("connection_id") {
                Some(Av::S(id)) => Some(id.clone()),
                _ => None,
            })
            .collect())
    }

    async fn forget(&self, node_id: &str) -> Result<()> {
        self.meter.write(200, 1, false);
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", &NodeItem::key(node_id))])))
            .send();
        call(&self.meter, "DeleteItem", &self.table, request).await?;
        Ok(())
    }
}
