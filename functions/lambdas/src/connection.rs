//! `$connect` and `$disconnect`: the connection map follows API Gateway's
//! connections.

use crate::{ok, Deps, Error};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};

/// `$connect`: records the connection and the endpoint that holds it.
pub async fn connect(
    d: &Deps,
    e: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, Error> {
    let session = d.session(&e).await?;
    d.chat.connect(&session, &d.endpoint(&e)?, None).await?;
    tracing::info!(user = %session.user_id, "connected");
    tracing::debug!(connection = %session.connection_id, "connection id");
    Ok(ok())
}

/// `$disconnect`: forgets the connection.
pub async fn disconnect(
    d: &Deps,
    e: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, Error> {
    let id = e
        .request_context
        .connection_id
        .clone()
        .ok_or(Error::MissingField("requestContext.connectionId"))?;
    d.chat.disconnect(&id).await?;
    tracing::debug!(connection = %id, "disconnected");
    Ok(ok())
}
