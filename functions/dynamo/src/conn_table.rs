//! The connections table as both of its users write it: the connection
//! map ([`crate::connections`]) and the node registry ([`crate::nodes`]).
//! Every item is keyed by `connection_id` (a connection, or a node under
//! its reserved key), and every write keeps the `by_user` index up to date
//! (one more write unit each). The builders live here once; each user
//! keeps only its expressions.

use crate::codec::{key, Item};
use crate::config::Tables;
use crate::meter::{item_size, Meter};
use crate::request::{call, conditional, query_pages, Written};
use crate::schema::CONNECTIONS;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodb::Client;
use chat_core::Result;
use std::sync::Arc;

/// The key attribute of every item.
const KEY: &str = "connection_id";
/// What an update or a delete is metered as (the item is small).
const SMALL_WRITE: usize = 200;

/// The connections table, with the meter its user counts on.
pub(crate) struct ConnectionsTable {
    client: Client,
    pub(crate) name: String,
    pub(crate) meter: Arc<Meter>,
}

impl ConnectionsTable {
    pub(crate) fn new(tables: &Tables) -> Self {
        ConnectionsTable {
            client: tables.client.clone(),
            name: tables.name(&CONNECTIONS),
            meter: Arc::new(Meter::default()),
        }
    }

    /// Puts `item`, if `condition` holds (when there is one); false when
    /// it did not.
    pub(crate) async fn put(&self, item: Item, condition: Option<&str>) -> Result<bool> {
        self.meter.write(item_size(&item), 1, false);
        let request = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .send();
        let written = conditional(&self.meter, "PutItem", &self.name, request).await?;
        Ok(matches!(written, Written::Done(_)))
    }

    /// An update of the item under `id`: the caller adds its expressions
    /// and runs it with [`ConnectionsTable::run_update`].
    pub(crate) fn update(&self, id: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key(&[(KEY, id)])))
    }

    /// Runs an update made by [`ConnectionsTable::update`], metered as
    /// `bytes` written (at least a small item's).
    pub(crate) async fn run_update(
        &self,
        update: UpdateItemFluentBuilder,
        bytes: usize,
    ) -> Result<Written<UpdateItemOutput>> {
        self.meter.write(bytes.max(SMALL_WRITE), 1, false);
        Ok(conditional(&self.meter, "UpdateItem", &self.name, update.send()).await?)
    }

    /// Runs an update; whether its condition held.
    pub(crate) async fn updated(&self, update: UpdateItemFluentBuilder) -> Result<bool> {
        let written = self.run_update(update, SMALL_WRITE).await?;
        Ok(matches!(written, Written::Done(_)))
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<()> {
        self.meter.write(SMALL_WRITE, 1, false);
        let request = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key(&[(KEY, id)])))
            .send();
        call(&self.meter, "DeleteItem", &self.name, request).await?;
        Ok(())
    }

    /// A strongly consistent GetItem.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Item>> {
        let request = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key(&[(KEY, id)])))
            .consistent_read(true)
            .send();
        let out = call(&self.meter, "GetItem", &self.name, request).await?;
        self.meter
            .read(out.item().map(item_size).unwrap_or(0), true);
        Ok(out.item().cloned())
    }

    /// Every item of an index whose `attribute` is `value`, all pages.
    pub(crate) async fn query_index(
        &self,
        index: &str,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<Item>> {
        let q = self
            .client
            .query()
            .table_name(&self.name)
            .index_name(index)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", attribute)
            .expression_attribute_values(":v", Av::S(value.to_string()));
        // A secondary index has no strongly consistent reads.
        Ok(query_pages(&self.meter, &self.name, q, usize::MAX, false).await?)
    }
}
