//! The DynamoDB item decoder: stream records (what `fanout` reads) and
//! every item type of the codec, from arbitrary JSON. Malformed items are
//! `Corrupt` errors, never panics.
#![no_main]
use aws_lambda_events::dynamodb::Event;
use chat_dynamo::codec::{
    from_item, ClaimItem, ConnectionItem, MembershipItem, MessageItem, NodeItem,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = serde_json::from_slice::<Event>(data) {
        for r in event.records {
            if let Ok(m) = from_item::<_, MessageItem>("fuzz", r.change.new_image.clone()) {
                let _ = chat_core::delivery::feed::job(m.message());
            }
        }
    }
    if let Ok(item) = serde_json::from_slice::<serde_dynamo::Item>(data) {
        if let Ok(c) = from_item::<_, ConnectionItem>("fuzz", item.clone()) {
            let _ = c.record();
        }
        if let Ok(n) = from_item::<_, NodeItem>("fuzz", item.clone()) {
            let _ = n.record();
        }
        let _ = from_item::<_, MembershipItem>("fuzz", item.clone());
        let _ = from_item::<_, ClaimItem>("fuzz", item);
    }
});
