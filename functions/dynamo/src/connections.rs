//! The DynamoDB [`Connections`] map: one item per connection, found by
//! user through the `by_user` index (a Query, never a Scan).

use crate::config::Tables;
use crate::error::Error as DErr;
use crate::meter::{item_size, Meter};
use crate::schema::{BY_USER_INDEX, CONNECTIONS, CONNECTION_TTL_SECS};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodb::Client;
use chat_core::ports::{ConnectionRecord, Connections};
use chat_core::Result;
use std::collections::HashMap;
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

    fn read(&self, item: &HashMap<String, Av>) -> Result<ConnectionRecord> {
        let get = |k: &str| match item.get(k) {
            Some(Av::S(v)) => Ok(v.clone()),
            _ => Err(DErr::corrupt(&self.table, format!("missing {k}"))),
        };
        let connected_at_ms = match item.get("connected_at") {
            Some(Av::N(v)) => v.parse().unwrap_or(0),
            _ => 0,
        };
        Ok(ConnectionRecord {
            connection_id: get("connection_id")?,
            user_id: get("user_id")?,
            endpoint: get("endpoint")?,
            connected_at_ms,
        })
    }
}

#[async_trait]
impl Connections for DynamoConnections {
    async fn register(&self, rec: &ConnectionRecord) -> Result<()> {
        let item: HashMap<String, Av> = HashMap::from([
            ("connection_id".into(), Av::S(rec.connection_id.clone())),
            ("user_id".into(), Av::S(rec.user_id.clone())),
            ("endpoint".into(), Av::S(rec.endpoint.clone())),
            (
                "connected_at".into(),
                Av::N(rec.connected_at_ms.to_string()),
            ),
            (
                "expires_at".into(),
                Av::N((rec.connected_at_ms / 1000 + CONNECTION_TTL_SECS).to_string()),
            ),
        ]);
        self.meter.write(item_size(&item), 1, false);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| DErr::call("PutItem", &self.table, e))?;
        self.meter.call(None);
        Ok(())
    }

    async fn remove(&self, connection_id: &str) -> Result<()> {
        self.meter.write(200, 1, false);
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("connection_id", Av::S(connection_id.to_string()))
            .send()
            .await
            .map_err(|e| DErr::call("DeleteItem", &self.table, e))?;
        self.meter.call(None);
        Ok(())
    }

    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("connection_id", Av::S(connection_id.to_string()))
            .send()
            .await
            .map_err(|e| DErr::call("GetItem", &self.table, e))?;
        self.meter.call(None);
        self.meter
            .read(out.item().map(item_size).unwrap_or(0), false);
        out.item().map(|i| self.read(i)).transpose()
    }

    async fn for_user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_USER_INDEX)
                .key_condition_expression("user_id = :u")
                .expression_attribute_values(":u", Av::S(user_id.to_string()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| DErr::call("Query", &self.table, e))?;
            self.meter.call(None);
            self.meter
                .read(page.items().iter().map(item_size).sum(), false);
            for i in page.items() {
                out.push(self.read(i)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }
}
