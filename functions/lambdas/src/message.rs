//! Every action route and `$default`: the frame's answers are posted to
//! the calling connection, like every other frame.

use crate::{ok, Deps, Error};
use async_trait::async_trait;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use chat_core::protocol::{ServerFrame, MAX_FRAME_BYTES};
use chat_core::Reply;

/// Posts answers to the calling connection.
struct PostReply<'a> {
    delivery: &'a dyn Delivery,
    me: ConnectionRecord,
}

#[async_trait]
impl Reply for PostReply<'_> {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError> {
        self.delivery.post(&self.me, &Outgoing::new(&frame)).await
    }
}

/// Every action route and `$default`: parses the body, runs the action and
/// posts the answers (or an `error` frame) to the caller.
pub async fn message(
    d: &Deps,
    e: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, Error> {
    let session = d.session(&e).await?;
    let reply = PostReply {
        delivery: d.delivery.as_ref(),
        me: ConnectionRecord {
            connection_id: session.connection_id.clone(),
            user_id: session.user_id.to_string(),
            endpoint: d.endpoint(&e)?,
            connected_at_ms: 0,
            ..Default::default()
        },
    };
    let body = e.body.as_deref().unwrap_or("");
    if body.len() > MAX_FRAME_BYTES {
        let err = chat_core::Error::TooLarge("frame exceeds 32 KB".into());
        let _ = reply.send(ServerFrame::error(&err, None, None)).await;
        return Ok(ok());
    }
    d.chat.handle_text(&session, body, &reply).await;
    Ok(ok())
}
