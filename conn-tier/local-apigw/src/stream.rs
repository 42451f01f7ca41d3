//! The stream poller (feature `lambda`): where the messages table's stream
//! cannot trigger Lambda (an emulator), polls it and invokes `fanout` with
//! each batch of records, in order, as the event source mapping would.
//! Records are passed on in DynamoDB JSON, through the same codec
//! (`serde_dynamo`) that decodes them in `fanout`.

use crate::lambda::LambdaBackend;
use aws_sdk_dynamodbstreams::types::AttributeValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A stream image as DynamoDB JSON (`{"text": {"S": "…"}, …}`).
fn image(m: Option<&HashMap<String, AttributeValue>>) -> Value {
    let item = serde_dynamo::Item::from(m.cloned().unwrap_or_default());
    serde_json::to_value(item).unwrap_or(Value::Null)
}

/// Retries of a failed batch before it is given up, as the template's
/// event source mapping does (`MaximumRetryAttempts: 3`, infra/template.yaml):
/// a `fanout` process that dies mid-batch costs a retry, not the batch.
const MAX_RETRY_ATTEMPTS: u32 = 3;

/// Invokes `fanout` with one batch; on an error, again after a back-off
/// (0.2, 0.4, 0.8 s), up to [`MAX_RETRY_ATTEMPTS`] times. The next batch
/// waits meanwhile, as a shard's does on AWS.
async fn invoke_with_retries(backend: &LambdaBackend, batch: Value) {
    for attempt in 0..=MAX_RETRY_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        match backend.invoke("fanout", &batch).await {
            Ok(_) => return,
            Err(e) if attempt < MAX_RETRY_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "fanout failed; retrying the batch")
            }
            Err(e) => {
                tracing::error!(error = %e, attempts = attempt + 1, "fanout failed; the batch is given up")
            }
        }
    }
}

/// Polls the stream of `table` and invokes `fanout` with each batch of
/// records, in order, until `stop`. For emulators, where no event source
/// mapping triggers the function.
pub async fn poll_stream(
    backend: Arc<LambdaBackend>,
    tables: chat_dynamo::Tables,
    table: String,
    stop: CancellationToken,
) {
    // A call in flight (an invoke may wait minutes for a cold build) is
    // dropped at once when the poller is told to stop.
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = poll(backend, tables, table, stop.clone()) => {}
    }
}

async fn poll(
    backend: Arc<LambdaBackend>,
    tables: chat_dynamo::Tables,
    table: String,
    stop: CancellationToken,
) {
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let conf = chat_dynamo::config::sdk_config(None).await;
    let streams = aws_sdk_dynamodbstreams::Client::new(&conf);
    let arn = match tables
        .client
        .describe_table()
        .table_name(&table)
        .send()
        .await
    {
        Ok(d) => d.table.and_then(|t| t.latest_stream_arn),
        Err(e) => {
            tracing::error!(error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), %table, "stream poller: cannot describe table");
            return;
        }
    };
    let Some(arn) = arn else {
        tracing::error!(%table, "stream poller: the table has no stream");
        return;
    };
    let mut iterators: Vec<String> = Vec::new();
    match streams.describe_stream().stream_arn(&arn).send().await {
        Ok(d) => {
            for shard in d
                .stream_description()
                .map(|s| s.shards())
                .unwrap_or_default()
            {
                let Some(id) = shard.shard_id() else { continue };
                match streams
                    .get_shard_iterator()
                    .stream_arn(&arn)
                    .shard_id(id)
                    .shard_iterator_type(ShardIteratorType::Latest)
                    .send()
                    .await
                {
                    Ok(it) => iterators.extend(it.shard_iterator().map(str::to_string)),
                    Err(e) => {
                        tracing::warn!(error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "stream poller: no iterator")
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "stream poller: cannot describe stream");
            return;
        }
    }
    tracing::info!(%arn, shards = iterators.len(), "polling the messages stream for fanout");
    while !stop.is_cancelled() {
        let mut idle = true;
        for it in iterators.iter_mut() {
            let out = match streams
                .get_records()
                .shard_iterator(it.as_str())
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "stream poller: get_records failed");
                    continue;
                }
            };
            if let Some(next) = out.next_shard_iterator() {
                *it = next.to_string();
            }
            let records: Vec<Value> = out
                .records()
                .iter()
                .map(|r| {
                    let d = r.dynamodb();
                    json!({
                        "eventID": r.event_id(),
                        "eventName": r.event_name().map(|n| n.as_str()),
                        "eventVersion": r.event_version().unwrap_or("1.1"),
                        "eventSource": "aws:dynamodb",
                        "awsRegion": r.aws_region().unwrap_or("us-east-1"),
                        "eventSourceARN": arn,
                        "dynamodb": {
                            "ApproximateCreationDateTime": d.and_then(|d| d.approximate_creation_date_time()).map(|t| t.secs()).unwrap_or(0),
                            "Keys": image(d.and_then(|d| d.keys())),
                            "NewImage": image(d.and_then(|d| d.new_image())),
                            "SequenceNumber": d.and_then(|d| d.sequence_number()),
                            "SizeBytes": d.and_then(|d| d.size_bytes()).unwrap_or(0),
                            "StreamViewType": "NEW_IMAGE",
                        }
                    })
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            idle = false;
            invoke_with_retries(&backend, json!({"Records": records})).await;
        }
        if idle {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}
