//! `fanout`: delivers each new message, fed by the messages table's stream
//! (records of one conversation arrive in order).

use crate::{Deps, Error};
use aws_lambda_events::dynamodb::Event as StreamEvent;
use chat_core::delivery::feed;
use chat_dynamo::codec::{from_item, MessageItem};
use serde_json::{json, Value};

/// `fanout`: for each message inserted into the messages table (stream
/// records arrive in order per conversation), delivers it to every
/// connection of every member except the sending one. A failed post never
/// fails the batch; a gone connection is pruned.
pub async fn fanout(d: &Deps, e: StreamEvent) -> Result<Value, Error> {
    let mut delivered = 0;
    for record in &e.records {
        if record.event_name != "INSERT" {
            continue;
        }
        let item: MessageItem = match from_item("messages stream", record.change.new_image.clone())
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(event = %record.event_id, error = %e, "stream record is not a message; skipped");
                continue;
            }
        };
        let job = feed::job(item.message());
        match d.deliverer.run(&job).await {
            Ok(n) => delivered += n,
            // Members catch up with sync; retrying the batch would re-deliver the rest.
            Err(err) => tracing::error!(error = %err, "fan-out failed"),
        }
    }
    Ok(json!({"delivered": delivered}))
}
