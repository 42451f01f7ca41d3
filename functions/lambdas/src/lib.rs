//! chat-lambdas: the chat services as AWS Lambda functions behind an API
//! Gateway WebSocket API. Each binary in `src/bin` wires configuration, the
//! DynamoDB store and the API Gateway delivery client to one handler here,
//! then calls `lambda_runtime::run`.
//!
//! # Layout
//! - [`Deps`]: everything a handler needs, built once per cold start
//!   ([`Deps::from_env`]) or from any ports (tests).
//! - [`authorize`]: the REQUEST authorizer on `$connect` (`?token=`).
//! - [`connect`], [`disconnect`]: `$connect` / `$disconnect`.
//! - [`message`]: every action route (`send`, `ack`, `sync`, `history`,
//!   `conversations`, `createGroup`/`addMember`/`removeMember`) and `$default`.
//! - [`fanout`]: group and 1:1 delivery, fed by the messages table's stream.
//! - [`init_tracing`]: JSON logs for CloudWatch.
//!
//! Answers to the caller are posted to its own connection
//! (`PostToConnection`), like every other frame.

use async_trait::async_trait;
use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse, ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use chat_core::auth::Authenticator;
use chat_core::fanout::{FeedFedFanout, InlineFanout};
use chat_core::ids::UserId;
use chat_core::ports::*;
use chat_core::protocol::{MessageView, ServerFrame};
use chat_core::service::format_ms;
use chat_core::{Chat, Deliverer, Reply, Session};
use serde_json::{json, Value};
use std::sync::Arc;

/// Failures before a handler can answer through the socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("the event has no {0}")]
    MissingField(&'static str),
    #[error(transparent)]
    Chat(#[from] chat_core::Error),
    #[error(transparent)]
    Dynamo(#[from] chat_dynamo::Error),
}

/// What the Lambda runtime reports for a failed invocation.
impl From<Error> for lambda_runtime::Diagnostic {
    fn from(e: Error) -> Self {
        let error_type = match &e {
            Error::Config(_) => "Config",
            Error::MissingField(_) => "BadEvent",
            Error::Chat(_) => "Chat",
            Error::Dynamo(_) => "DynamoDB",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// A handler's dependencies.
pub struct Deps {
    pub chat: Chat,
    pub connections: Arc<dyn Connections>,
    pub delivery: Arc<dyn Delivery>,
    pub deliverer: Arc<Deliverer>,
    /// The management endpoint to use instead of `https://{domain}/{stage}`
    /// (`CHAT_CALLBACK_URL`: local runs, custom domains).
    pub callback_override: Option<String>,
}

impl Deps {
    /// Wires the services to any ports.
    pub fn new(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        delivery: Arc<dyn Delivery>,
        callback_override: Option<String>,
    ) -> Self {
        let deliverer = Arc::new(Deliverer::new(
            store.clone(),
            connections.clone(),
            delivery.clone(),
        ));
        // Message frames come from the messages table's stream (the `fanout`
        // function, in id order per conversation); receipts and group frames
        // are delivered inline.
        let fanout = Arc::new(FeedFedFanout(Arc::new(InlineFanout(deliverer.clone()))));
        Deps {
            chat: Chat::new(store, connections.clone(), fanout).delivered_by_store_feed(),
            connections,
            delivery,
            deliverer,
            callback_override,
        }
    }

    /// From the environment: `CHAT_TABLE_PREFIX`, `CHAT_CALLBACK_URL`
    /// (optional) and the standard AWS variables. Makes no network call, so
    /// a cold start stays short.
    pub async fn from_env() -> Result<Self, Error> {
        let prefix = std::env::var("CHAT_TABLE_PREFIX").unwrap_or_else(|_| "chat-".into());
        let conf = chat_dynamo::config::sdk_config(None).await;
        let tables = chat_dynamo::config::tables_unchecked(&conf, &prefix);
        let callback = std::env::var("CHAT_CALLBACK_URL")
            .ok()
            .filter(|s| !s.is_empty());
        let delivery = Arc::new(chat_dynamo::apigw::ApiGatewayDelivery::new(
            conf,
            callback.clone(),
        ));
        Ok(Deps::new(
            Arc::new(chat_dynamo::DynamoStore::new(&tables)),
            Arc::new(chat_dynamo::DynamoConnections::new(&tables)),
            delivery,
            callback,
        ))
    }

    /// The management endpoint that holds this event's connection.
    fn endpoint(&self, e: &ApiGatewayWebsocketProxyRequest) -> Result<String, Error> {
        if let Some(url) = &self.callback_override {
            return Ok(url.clone());
        }
        let ctx = &e.request_context;
        let domain = ctx
            .domain_name
            .as_deref()
            .ok_or(Error::MissingField("requestContext.domainName"))?;
        let stage = ctx
            .stage
            .as_deref()
            .ok_or(Error::MissingField("requestContext.stage"))?;
        Ok(chat_dynamo::apigw::callback_url(domain, stage))
    }

    /// Who is speaking: the authorizer's context, or the connection map.
    async fn session(&self, e: &ApiGatewayWebsocketProxyRequest) -> Result<Session, Error> {
        let ctx = &e.request_context;
        let connection_id = ctx
            .connection_id
            .clone()
            .ok_or(Error::MissingField("requestContext.connectionId"))?;
        let from_authorizer = ["user_id", "principalId"].iter().find_map(|k| {
            ctx.authorizer
                .fields
                .get(*k)
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let user = match from_authorizer {
            Some(u) => u,
            None => self
                .connections
                .get(&connection_id)
                .await?
                .map(|c| c.user_id)
                .ok_or(Error::MissingField(
                    "authorizer context or connection record",
                ))?,
        };
        let user_id = UserId::parse(&user).map_err(|_| Error::MissingField("a valid user id"))?;
        Ok(Session {
            connection_id,
            user_id,
        })
    }
}

fn ok() -> ApiGatewayProxyResponse {
    response(200, "")
}

fn response(status: i64, body: &str) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    if !body.is_empty() {
        r.body = Some(aws_lambda_events::encodings::Body::Text(body.to_string()));
    }
    r
}

/// The REQUEST authorizer: verifies `?token=` and allows the connection
/// with principalId = user id and `user_id` in the context, or denies it.
pub fn authorize(
    auth: &Authenticator,
    e: &ApiGatewayCustomAuthorizerRequestTypeRequest,
) -> ApiGatewayCustomAuthorizerResponse {
    let token = e
        .query_string_parameters
        .first("token")
        .map(str::to_string)
        .or_else(|| {
            e.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        });
    let user = token.as_deref().map(|t| auth.verify(t));
    let (effect, principal, context) = match user {
        Some(Ok(u)) => (
            IamPolicyEffect::Allow,
            u.to_string(),
            json!({"user_id": u.as_str()}),
        ),
        Some(Err(err)) => {
            tracing::info!(reason = %err, "denied");
            (IamPolicyEffect::Deny, "anonymous".to_string(), json!({}))
        }
        None => (IamPolicyEffect::Deny, "anonymous".to_string(), json!({})),
    };
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = effect;
    statement.resource = vec![e.method_arn.clone().unwrap_or_else(|| "*".into())];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".into());
    policy.statement = vec![statement];
    let mut r = ApiGatewayCustomAuthorizerResponse::default();
    r.principal_id = Some(principal);
    r.policy_document = policy;
    r.context = context;
    r
}

/// `$connect`: records the connection and the endpoint that holds it.
pub async fn connect(
    d: &Deps,
    e: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, Error> {
    let session = d.session(&e).await?;
    d.chat.connect(&session, &d.endpoint(&e)?).await?;
    tracing::info!(connection = %session.connection_id, user = %session.user_id, "connected");
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
    tracing::info!(connection = %id, "disconnected");
    Ok(ok())
}

/// Posts answers to the calling connection.
struct PostReply<'a> {
    delivery: &'a dyn Delivery,
    me: ConnectionRecord,
}

#[async_trait]
impl Reply for PostReply<'_> {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError> {
        self.delivery.post(&self.me, &frame.to_json()).await
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
        },
    };
    let body = e.body.as_deref().unwrap_or("");
    if body.len() > 32 * 1024 {
        let err = chat_core::Error::TooLarge("frame exceeds 32 KB".into());
        let _ = reply.send(err.to_frame(None, None)).await;
        return Ok(ok());
    }
    d.chat.handle_text(&session, body, &reply).await;
    Ok(ok())
}

/// The message a stream record's new image describes, and its origin.
fn message_from_image(image: &Value) -> Option<(MessageView, Option<String>)> {
    let s = |k: &str| image.get(k)?.get("S")?.as_str().map(str::to_string);
    let n = |k: &str| image.get(k)?.get("N")?.as_str()?.parse::<u64>().ok();
    Some((
        MessageView {
            conversation_id: s("conversation_id")?,
            message_id: n("message_id")?,
            from: s("sender")?,
            text: s("text")?,
            sent_at: format_ms(n("sent_at")?),
        },
        s("origin"),
    ))
}

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
        let image = serde_json::to_value(&record.change.new_image).unwrap_or(Value::Null);
        let Some((view, origin)) = message_from_image(&image) else {
            tracing::warn!(event = %record.event_id, "stream record is not a message; skipped");
            continue;
        };
        let job = FanoutJob {
            audience: Audience::Conversation(view.conversation_id.clone()),
            order_key: view.conversation_id.clone(),
            frame: ServerFrame::Message(view),
            except_connection: origin,
        };
        match d.deliverer.run(&job).await {
            Ok(n) => delivered += n,
            // Members catch up with sync; retrying the batch would re-deliver the rest.
            Err(err) => tracing::error!(error = %err, "fan-out failed"),
        }
    }
    Ok(json!({"delivered": delivered}))
}

/// JSON logs (CloudWatch), level from `RUST_LOG` (default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .without_time()
        .try_init();
}
