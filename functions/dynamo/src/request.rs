//! The one way the adapters send a request: run it, record the call and the
//! capacity DynamoDB reported in the [`Meter`], and turn a failed condition
//! into a value instead of an error (it is an answer, not a fault).

use crate::codec::Item;
use crate::error::Error;
use crate::meter::{item_size, Meter};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::{
    batch_write_item::BatchWriteItemOutput,
    delete_item::{DeleteItemError, DeleteItemOutput},
    get_item::GetItemOutput,
    put_item::{PutItemError, PutItemOutput},
    query::QueryOutput,
    transact_write_items::{TransactWriteItemsError, TransactWriteItemsOutput},
    update_item::{UpdateItemError, UpdateItemOutput},
};
use aws_sdk_dynamodb::types::ReturnConsumedCapacity;
use std::future::Future;

/// An output that may report consumed capacity.
pub trait Consumed {
    /// The capacity units the endpoint reported, if it did.
    fn consumed(&self) -> Option<f64>;
}

macro_rules! consumed {
    ($($t:ty),*) => {$(
        impl Consumed for $t {
            fn consumed(&self) -> Option<f64> {
                self.consumed_capacity().and_then(|c| c.capacity_units())
            }
        }
    )*};
}
consumed!(
    PutItemOutput,
    UpdateItemOutput,
    DeleteItemOutput,
    GetItemOutput,
    QueryOutput
);

macro_rules! consumed_per_table {
    ($($t:ty),*) => {$(
        impl Consumed for $t {
            fn consumed(&self) -> Option<f64> {
                let units = self.consumed_capacity().iter().filter_map(|c| c.capacity_units());
                units.reduce(|a, b| a + b)
            }
        }
    )*};
}
consumed_per_table!(TransactWriteItemsOutput, BatchWriteItemOutput);

/// An operation error that may be a failed condition.
pub trait ConditionFailed {
    /// `Some(old item, if DynamoDB returned it)` when the condition failed.
    fn failed_condition(&self) -> Option<Option<Item>>;
}

macro_rules! condition_failed {
    ($($t:ident),*) => {$(
        impl ConditionFailed for $t {
            fn failed_condition(&self) -> Option<Option<Item>> {
                match self {
                    $t::ConditionalCheckFailedException(c) => Some(c.item().cloned()),
                    _ => None,
                }
            }
        }
    )*};
}
condition_failed!(PutItemError, UpdateItemError, DeleteItemError);

/// A transaction fails its condition when any item's condition failed.
impl ConditionFailed for TransactWriteItemsError {
    fn failed_condition(&self) -> Option<Option<Item>> {
        match self {
            TransactWriteItemsError::TransactionCanceledException(c)
                if c.cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
            {
                Some(None)
            }
            _ => None,
        }
    }
}

/// What a conditional write came to.
#[derive(Debug)]
pub enum Written<T> {
    Done(T),
    /// The condition failed; the item that was there, if DynamoDB sent it.
    ConditionFailed(Option<Item>),
}

/// Runs a request, metering the call.
pub async fn call<T, E, R>(
    meter: &Meter,
    op: &'static str,
    table: &str,
    request: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<T, Error>
where
    T: Consumed,
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let out = request.await.map_err(|e| {
        chat_core::metrics::store_error(op);
        Error::call(op, table, e)
    })?;
    meter.call(out.consumed());
    Ok(out)
}

/// Runs a conditional write, metering the call; a failed condition is
/// [`Written::ConditionFailed`].
pub async fn conditional<T, E, R>(
    meter: &Meter,
    op: &'static str,
    table: &str,
    request: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<Written<T>, Error>
where
    T: Consumed,
    E: ConditionFailed + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match request.await {
        Ok(out) => {
            meter.call(out.consumed());
            Ok(Written::Done(out))
        }
        Err(e) => match e.as_service_error().and_then(|s| s.failed_condition()) {
            Some(old) => {
                meter.call(None);
                Ok(Written::ConditionFailed(old))
            }
            None => {
                chat_core::metrics::store_error(op);
                Err(Error::call(op, table, e))
            }
        },
    }
}

/// Runs a Query to the end (or `max` items), following LastEvaluatedKey,
/// metering every page (the calls and the items' read units).
pub async fn query_pages(
    meter: &Meter,
    table: &str,
    q: QueryFluentBuilder,
    max: usize,
    consistent: bool,
) -> Result<Vec<Item>, Error> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let request = q
            .clone()
            .set_exclusive_start_key(start.take())
            .consistent_read(consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let page = call(meter, "Query", table, request).await?;
        meter.read(page.items().iter().map(item_size).sum(), consistent);
        out.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(k) if out.len() < max && !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    out.truncate(max);
    Ok(out)
}
