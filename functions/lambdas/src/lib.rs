//! chat-lambdas: the chat services as AWS Lambda functions behind an API
//! Gateway WebSocket API. Each binary in `src/bin` wires configuration, the
//! DynamoDB store and the API Gateway delivery client to one handler here,
//! then calls [`serve`] (`lambda_runtime::run`, kept alive).
//!
//! # Layout
//! - this file: [`Deps`], everything a handler needs, built once per cold
//!   start ([`Deps::from_env`]) or from any ports (tests); the crate's
//!   [`Error`]; [`init_tracing`] (JSON logs for CloudWatch).
//! - [`authorizer`]: the REQUEST authorizer on `$connect` (`?token=`).
//! - [`connection`]: `$connect` / `$disconnect`.
//! - [`message`]: every action route (`send`, `ack`, `sync`, `history`,
//!   `conversations`, `createGroup`/`addMember`/`removeMember`) and `$default`.
//! - [`fanout`]: group and 1:1 delivery, fed by the messages table's stream.
//! - [`emf`]: the metrics as CloudWatch Embedded Metric Format lines, one
//!   per invocation ([`emf::metered`]).
//! - [`serve`]: `lambda_runtime::run`, started again when the runtime API
//!   fails instead of ending the process.
//!
//! Answers to the caller are posted to its own connection
//! (`PostToConnection`), like every other frame.

pub mod authorizer;
pub mod connection;
pub mod emf;
pub mod fanout;
pub mod message;
pub mod serve;

pub use authorizer::authorize;
pub use connection::{connect, disconnect};
pub use fanout::fanout;
pub use message::message;
pub use serve::{serve, serve_until};

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use chat_core::delivery::InlineFanout;
use chat_core::ids::{DeviceId, UserId};
use chat_core::ports::*;
use chat_core::service::ChatLimits;
use chat_core::{Chat, Deliverer, MessageDelivery, Session};
use serde_json::Value;
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

/// The services' limits behind API Gateway: answers under its 128 KB post
/// limit; `CHAT_MAX_GROUPS_PER_DAY` (default 500) groups per user per day.
fn lambda_limits() -> ChatLimits {
    ChatLimits {
        max_answer_bytes: ChatLimits::API_GATEWAY_ANSWER_BYTES,
        groups_per_day: std::env::var("CHAT_MAX_GROUPS_PER_DAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ChatLimits::default().groups_per_day),
    }
}

/// How long a new connection's live messages wait for its first `sync`.
pub const DEFAULT_SYNC_GRACE_MS: u64 = 1000;

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
    /// Wires the services to any ports. `sync_grace_ms`: how long a new
    /// connection's live messages wait for its first `sync` (connections
    /// keep their order through sync states: docs/design.md).
    pub fn new(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        delivery: Arc<dyn Delivery>,
        callback_override: Option<String>,
        sync_grace_ms: u64,
    ) -> Self {
        let deliverer = Arc::new(
            Deliverer::new(store.clone(), connections.clone(), delivery.clone())
                .with_sync_states(sync_grace_ms),
        );
        // Message frames come from the messages table's stream (the `fanout`
        // function, in id order per conversation); receipts and group frames
        // are delivered inline.
        let fanout = Arc::new(InlineFanout(deliverer.clone()));
        Deps {
            chat: Chat::new(
                store,
                connections.clone(),
                fanout,
                MessageDelivery::StoreFeed,
            )
            .with_sync_states()
            .with_limits(lambda_limits()),
            connections,
            delivery,
            deliverer,
            callback_override,
        }
    }

    /// From the environment: `CHAT_TABLE_PREFIX`, `CHAT_CALLBACK_URL`
    /// (optional), `CHAT_SYNC_GRACE_MS` (default 1000) and the standard AWS
    /// variables. Makes no network call, so a cold start stays short.
    pub async fn from_env() -> Result<Self, Error> {
        let prefix =
            std::env::var("CHAT_TABLE_PREFIX").unwrap_or_else(|_| DEFAULT_TABLE_PREFIX.into());
        let conf = chat_dynamo::config::sdk_config(None).await;
        let tables = chat_dynamo::config::tables_unchecked(&conf, &prefix);
        let callback = std::env::var("CHAT_CALLBACK_URL")
            .ok()
            .filter(|s| !s.is_empty());
        let delivery = Arc::new(chat_dynamo::apigw::ApiGatewayDelivery::new(
            conf,
            callback.clone(),
        ));
        let grace = match std::env::var("CHAT_SYNC_GRACE_MS") {
            Err(_) => DEFAULT_SYNC_GRACE_MS,
            Ok(v) => v.parse().map_err(|_| {
                Error::Config(format!("CHAT_SYNC_GRACE_MS={v:?} is not a number of ms"))
            })?,
        };
        Ok(Deps::new(
            Arc::new(chat_dynamo::DynamoStore::new(&tables)),
            Arc::new(chat_dynamo::DynamoConnections::new(&tables)),
            delivery,
            callback,
            grace,
        ))
    }

    /// The management endpoint that holds this event's connection.
    pub(crate) fn endpoint(&self, e: &ApiGatewayWebsocketProxyRequest) -> Result<String, Error> {
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
    pub(crate) async fn session(
        &self,
        e: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<Session, Error> {
        let ctx = &e.request_context;
        let connection_id = ctx
            .connection_id
            .clone()
            .ok_or(Error::MissingField("requestContext.connectionId"))?;
        let field = |k: &str| {
            ctx.authorizer
                .fields
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let from_authorizer = field("user_id").or_else(|| field("principalId"));
        let (user, device) = match from_authorizer {
            Some(u) => (u, field("device_id")),
            None => {
                let rec =
                    self.connections
                        .get(&connection_id)
                        .await?
                        .ok_or(Error::MissingField(
                            "authorizer context or connection record",
                        ))?;
                (rec.user_id, rec.device_id)
            }
        };
        let user_id = UserId::parse(&user).map_err(|_| Error::MissingField("a valid user id"))?;
        let device_id = device
            .map(|d| DeviceId::parse(&d))
            .transpose()
            .map_err(|_| Error::MissingField("a valid device id"))?;
        Ok(Session::new(connection_id, user_id).with_device(device_id))
    }
}

pub(crate) fn ok() -> ApiGatewayProxyResponse {
    response(200, "")
}

pub(crate) fn response(status: i64, body: &str) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    if !body.is_empty() {
        r.body = Some(aws_lambda_events::encodings::Body::Text(body.to_string()));
    }
    r
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
