//! conn-tier as the local API Gateway (feature `lambda`, `--functions lambda`):
//! each WebSocket event becomes the exact API Gateway WebSocket event JSON and
//! goes to the Lambda function its route selects, through the Lambda Invoke
//! API (`cargo lambda watch`, or real Lambda).
//!
//! - Upgrade: the REQUEST authorizer runs with `?token=` (no token: 401
//!   without invoking it, as API Gateway does with an identity source);
//!   Deny is 401. Then `$connect` runs; a non-200 answer refuses the socket.
//! - Frames: route selection `$request.body.action`; an action with no
//!   route, or a frame that is not JSON, goes to `$default`.
//! - The functions answer through the `@connections` management API
//!   ([`crate::mgmt`]): `domainName` and `stage` in the events name it.
//! - [`poll_stream`]: where the DynamoDB stream cannot trigger Lambda (an
//!   emulator), polls the messages table's stream and invokes `fanout` with
//!   the records, in order, as the event source mapping would.

use crate::backend::{Backend, Refusal};
use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use chat_core::ids::UserId;
use chat_core::protocol::ServerFrame;
use chat_core::service::now_ms;
use chat_core::{Error, Reply, Session};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The route keys of the WebSocket API and the function behind each.
pub const ROUTES: [(&str, &str); 10] = [
    ("send", "send"),
    ("ack", "ack"),
    ("sync", "sync"),
    ("history", "history"),
    ("conversations", "conversations"),
    ("createGroup", "groups"),
    ("addMember", "groups"),
    ("removeMember", "groups"),
    ("$connect", "connect"),
    ("$disconnect", "disconnect"),
];

/// The route key a frame selects (`$request.body.action`) and its function.
pub fn select_route(text: &str) -> (String, &'static str) {
    let action = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_string));
    match action.and_then(|a| ROUTES.iter().find(|(k, _)| !k.starts_with('$') && *k == a)) {
        Some((key, function)) => (key.to_string(), function),
        None => ("$default".into(), "default"),
    }
}

/// Invokes the chat functions like API Gateway would.
pub struct LambdaBackend {
    client: aws_sdk_lambda::Client,
    /// Prepended to each function name (a stack's names, say).
    prefix: String,
    /// `domainName` in the events: the management API's host:port.
    domain: String,
    stage: String,
}

impl LambdaBackend {
    /// `endpoint`: the Invoke API (`http://127.0.0.1:9000` for cargo lambda
    /// watch); `None` for AWS Lambda.
    pub async fn new(endpoint: Option<&str>, prefix: &str, domain: &str, stage: &str) -> Self {
        let conf = chat_dynamo::config::sdk_config(None).await;
        let mut b = aws_sdk_lambda::config::Builder::from(&conf);
        if let Some(url) = endpoint {
            b = b.endpoint_url(url);
        }
        // A cold `cargo lambda watch` compiles the function on first invoke.
        b = b.timeout_config(
            aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(600))
                .operation_timeout(Duration::from_secs(600))
                .build(),
        );
        LambdaBackend {
            client: aws_sdk_lambda::Client::from_conf(b.build()),
            prefix: prefix.to_string(),
            domain: domain.to_string(),
            stage: stage.to_string(),
        }
    }

    /// Invokes a function synchronously; its JSON answer, or why it failed.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, String> {
        let name = format!("{}{function}", self.prefix);
        let out = self
            .client
            .invoke()
            .function_name(&name)
            .payload(Blob::new(payload.to_string().into_bytes()))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "invoking {name}: {}",
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                )
            })?;
        let body = out
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        if let Some(kind) = out.function_error() {
            return Err(format!(
                "{name} failed ({kind}): {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{name} answered non-JSON: {e}"))
    }

    /// `requestContext` of a WebSocket event.
    fn context(
        &self,
        connection_id: &str,
        route: &str,
        event_type: &str,
        user: Option<&str>,
    ) -> Value {
        let now = now_ms();
        let mut ctx = json!({
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": format!("{now:x}"),
            "requestTime": chat_core::service::format_ms(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": now,
            "requestTimeEpoch": now,
            "identity": {"sourceIp": "127.0.0.1"},
            "requestId": format!("{connection_id}-{now}"),
            "domainName": self.domain,
            "connectionId": connection_id,
            "apiId": "local"
        });
        if let Some(u) = user {
            ctx["authorizer"] = json!({"principalId": u, "user_id": u});
        }
        ctx
    }
}

#[async_trait]
impl Backend for LambdaBackend {
    async fn authenticate(
        &self,
        token: Option<&str>,
        connection_id: &str,
    ) -> Result<UserId, Refusal> {
        let Some(token) = token else {
            return Err(Refusal::Unauthorized("no token (identity source)".into()));
        };
        let event = json!({
            "type": "REQUEST",
            "methodArn": format!("arn:aws:execute-api:local:000000000000:local/{}/$connect", self.stage),
            "headers": {},
            "queryStringParameters": {"token": token},
            "multiValueQueryStringParameters": {"token": [token]},
            "stageVariables": {},
            "requestContext": self.context(connection_id, "$connect", "CONNECT", None),
        });
        let answer = self
            .invoke("authorizer", &event)
            .await
            .map_err(Refusal::Failed)?;
        let allowed = answer["policyDocument"]["Statement"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|st| st["Effect"] == "Allow"));
        if !allowed {
            return Err(Refusal::Unauthorized(
                "the authorizer denied the connection".into(),
            ));
        }
        let user = answer["context"]["user_id"]
            .as_str()
            .or(answer["principalId"].as_str())
            .unwrap_or("");
        UserId::parse(user).map_err(|_| {
            Refusal::Failed(format!(
                "the authorizer allowed an invalid user id {user:?}"
            ))
        })
    }

    async fn connect(&self, s: &Session) -> Result<(), String> {
        let event = json!({
            "headers": {},
            "isBase64Encoded": false,
            "requestContext": self.context(&s.connection_id, "$connect", "CONNECT", Some(s.user_id.as_str())),
        });
        let answer = self.invoke("connect", &event).await?;
        match answer["statusCode"].as_i64() {
            Some(200) => Ok(()),
            other => Err(format!("$connect answered {other:?}")),
        }
    }

    async fn frame(
        &self,
        s: &Session,
        text: &str,
        reply: &std::sync::Arc<dyn Reply>,
    ) -> Option<chat_core::service::Deferred> {
        let (route, function) = select_route(text);
        let event = json!({
            "requestContext": self.context(&s.connection_id, &route, "MESSAGE", Some(s.user_id.as_str())),
            "body": text,
            "isBase64Encoded": false,
        });
        if let Err(e) = self.invoke(function, &event).await {
            tracing::error!(error = %e, %route, "function failed");
            let frame: ServerFrame = Error::Store(e).to_frame(Some(&route), None);
            let _ = reply.send(frame).await;
        }
        // The function answered through @connections already.
        None
    }

    async fn disconnect(&self, s: &Session) {
        let mut ctx = self.context(
            &s.connection_id,
            "$disconnect",
            "DISCONNECT",
            Some(s.user_id.as_str()),
        );
        ctx["disconnectStatusCode"] = json!(1000);
        let event = json!({"headers": {}, "isBase64Encoded": false, "requestContext": ctx});
        if let Err(e) = self.invoke("disconnect", &event).await {
            tracing::warn!(error = %e, "$disconnect failed");
        }
    }
}

/// A stream attribute value as DynamoDB JSON (`{"S": "…"}`).
fn attr_json(v: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue as A;
    match v {
        A::S(s) => json!({"S": s}),
        A::N(n) => json!({"N": n}),
        A::Bool(b) => json!({"BOOL": b}),
        A::Null(b) => json!({"NULL": b}),
        A::Ss(l) => json!({"SS": l}),
        A::Ns(l) => json!({"NS": l}),
        A::L(l) => json!({"L": l.iter().map(attr_json).collect::<Vec<_>>()}),
        A::M(m) => {
            json!({"M": m.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect::<serde_json::Map<_, _>>()})
        }
        _ => json!({"NULL": true}),
    }
}

fn image(
    m: Option<&std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>,
) -> Value {
    Value::Object(
        m.map(|m| m.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect())
            .unwrap_or_default(),
    )
}

/// Polls the stream of `table` and invokes `fanout` with each batch of
/// records, in order, until `stop`. For emulators, where no event source
/// mapping triggers the function.
pub async fn poll_stream(
    backend: std::sync::Arc<LambdaBackend>,
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
            if let Err(e) = backend.invoke("fanout", &json!({"Records": records})).await {
                tracing::error!(error = %e, "fanout failed");
            }
        }
        if idle {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_selection_follows_the_action_and_falls_back_to_default() {
        assert_eq!(
            select_route(r#"{"action":"send"}"#),
            ("send".into(), "send")
        );
        assert_eq!(
            select_route(r#"{"action":"addMember"}"#),
            ("addMember".into(), "groups")
        );
        assert_eq!(
            select_route(r#"{"action":"ping"}"#),
            ("$default".into(), "default")
        );
        assert_eq!(
            select_route(r#"{"action":"$connect"}"#),
            ("$default".into(), "default")
        );
        assert_eq!(select_route("not json"), ("$default".into(), "default"));
        assert_eq!(
            select_route(r#"{"to":"x"}"#),
            ("$default".into(), "default")
        );
    }
}
