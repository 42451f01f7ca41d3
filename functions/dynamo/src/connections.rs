//! The DynamoDB [`Connections`] map: one item per connection
//! ([`ConnectionItem`]), found by user through the `by_user` index (a
//! Query, never a Scan).

use crate::codec::{from_item, key, to_item, ConnectionItem, Item};
use crate::config::Tables;
use crate::meter::{item_size, Meter};
use crate::request::call;
use crate::schema::{BY_USER_INDEX, CONNECTIONS};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodb::Client;
use chat_core::ports::{ConnectionRecord, Connections};
use chat_core::Result;
use std::sync::Arc;

pub struct DynamoConnections {
    client: Client,
    table: String,
    meter: Arc<Meter>,
}

impl DynamoConnections {
    pub fn new(tables: &Tables) -> Self {
        DynamoConnections {
            client: tables.client.clone(),
            table: tables.name(&CONNECTIONS),
            meter: Arc::new(Meter::default()),
        }
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    fn record(&self, item: Item) -> Result<ConnectionRecord> {
        Ok(from_item::<_, ConnectionItem>(&self.table, item)?.record())
    }
}

#[async_trait]
impl Connections for DynamoConnections {
    async fn register(&self, rec: &ConnectionRecord) -> Result<()> {
        let item = to_item(&ConnectionItem::new(rec));
        self.meter.write(item_size(&item), 1, false);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send();
        call(&self.meter, "PutItem", &self.table, request).await?;
        Ok(())
    }

    async fn remove(&self, connection_id: &str) -> Result<()> {
        self.meter.write(200, 1, false);
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", connection_id)])))
            .send();
        call(&self.meter, "DeleteItem", &self.table, request).await?;
        Ok(())
    }

    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", connection_id)])))
            .send();
        let out = call(&self.meter, "GetItem", &self.table, request).await?;
        self.meter
            .read(out.item().map(item_size).unwrap_or(0), false);
        out.item().cloned().map(|i| self.record(i)).transpose()
    }

    async fn for_user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_USER_INDEX)
                .key_condition_expression("user_id = :u")
                .expression_attribute_values(":u", Av::S(user_id.to_string()))
                .set_exclusive_start_key(start.take())
                .send();
            let page = call(&self.meter, "Query", &self.table, request).await?;
            self.meter
                .read(page.items().iter().map(item_size).sum(), false);
            for i in page.items() {
                out.push(self.record(i.clone())?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }
}
