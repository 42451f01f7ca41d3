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
//!   (`chat_management::api`): `domainName` and `stage` in the events name it.
//! - Routes and their functions come from chat-core's one table of actions
//!   ([`chat_core::protocol::route`]), as the SAM template's do.

use crate::error::Error;
use aws_sdk_lambda::primitives::Blob;
use chat_core::auth::Identity;
use chat_core::ids::{DeviceId, UserId};
use chat_core::protocol::route;
use chat_core::time::now_ms;
use chat_core::Session;
use serde_json::{json, Value};
use std::time::Duration;

/// What the REQUEST authorizer decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The user, and the device the authorizer settled on (the token's
    /// `device` claim, else `?device=`).
    Allowed(Identity),
    /// HTTP 401, and why (for the log).
    Denied(String),
}

/// How long a function that answered before may take: API Gateway's
/// integration timeout (29 s). Past it the invocation counts as failed
/// (a frame's sender gets `internal` and resends; the stream poller retries
/// its batch) instead of hanging: under `cargo lambda watch`, a function
/// process that dies mid-invocation never answers it.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(29);

/// A function's first invocation: a cold `cargo lambda watch` compiles it.
const COLD_INVOKE_TIMEOUT: Duration = Duration::from_secs(600);

/// Invokes the chat functions like API Gateway would.
pub struct LambdaBackend {
    client: aws_sdk_lambda::Client,
    /// Past this a warm function's invocation has failed.
    invoke_timeout: Duration,
    /// Functions that have answered once (the cold timeout is for the others).
    warm: std::sync::Mutex<std::collections::HashSet<String>>,
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
                .operation_attempt_timeout(COLD_INVOKE_TIMEOUT)
                .operation_timeout(COLD_INVOKE_TIMEOUT)
                .build(),
        );
        LambdaBackend {
            client: aws_sdk_lambda::Client::from_conf(b.build()),
            invoke_timeout: DEFAULT_INVOKE_TIMEOUT,
            warm: Default::default(),
            prefix: prefix.to_string(),
            domain: domain.to_string(),
            stage: stage.to_string(),
        }
    }

    /// How long a function that answered before may take (default
    /// [`DEFAULT_INVOKE_TIMEOUT`]).
    pub fn with_invoke_timeout(mut self, timeout: Duration) -> Self {
        self.invoke_timeout = timeout;
        self
    }

    fn is_warm(&self, function: &str) -> bool {
        self.warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(function)
    }

    /// Invokes a function synchronously; its JSON answer, or why it failed
    /// (also when it does not answer within the invoke timeout).
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, Error> {
        let name = format!("{}{function}", self.prefix);
        let limit = if self.is_warm(function) {
            self.invoke_timeout
        } else {
            COLD_INVOKE_TIMEOUT
        };
        let call = self
            .client
            .invoke()
            .function_name(&name)
            .payload(Blob::new(payload.to_string().into_bytes()))
            .send();
        let out = match tokio::time::timeout(limit, call).await {
            Err(_) => {
                return Err(Error::Invoke(format!(
                    "{name} did not answer within {} ms",
                    limit.as_millis()
                )))
            }
            Ok(r) => r.map_err(|e| {
                Error::Invoke(format!(
                    "invoking {name}: {}",
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                ))
            })?,
        };
        self.warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(function.to_string());
        let body = out
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        if let Some(kind) = out.function_error() {
            return Err(Error::Invoke(format!(
                "{name} failed ({kind}): {}",
                String::from_utf8_lossy(&body)
            )));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| Error::BadAnswer {
            function: name,
            detail: format!("non-JSON: {e}"),
        })
    }

    /// `requestContext` of a WebSocket event.
    fn context(
        &self,
        connection_id: &str,
        route: &str,
        event_type: &str,
        session: Option<&Session>,
    ) -> Value {
        let now = now_ms();
        let mut ctx = json!({
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": format!("{now:x}"),
            "requestTime": chat_core::time::format_ms(now),
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
        if let Some(s) = session {
            let u = s.user_id.as_str();
            ctx["authorizer"] = json!({"principalId": u, "user_id": u});
            if let Some(d) = &s.device_id {
                ctx["authorizer"]["device_id"] = json!(d.as_str());
            }
        }
        ctx
    }
}

impl LambdaBackend {
    /// Runs the REQUEST authorizer on an upgrade. No token: denied without
    /// invoking it, as API Gateway does with an identity source.
    pub async fn authorize(
        &self,
        token: Option<&str>,
        device: Option<&str>,
        connection_id: &str,
    ) -> Result<Authorization, Error> {
        let Some(token) = token else {
            return Ok(Authorization::Denied("no token (identity source)".into()));
        };
        let (mut query, mut multi) = (json!({"token": token}), json!({"token": [token]}));
        if let Some(d) = device {
            query["device"] = json!(d);
            multi["device"] = json!([d]);
        }
        let event = json!({
            "type": "REQUEST",
            "methodArn": format!("arn:aws:execute-api:local:000000000000:local/{}/$connect", self.stage),
            "headers": {},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi,
            "stageVariables": {},
            "requestContext": self.context(connection_id, "$connect", "CONNECT", None),
        });
        let answer = self.invoke("authorizer", &event).await?;
        let allowed = answer["policyDocument"]["Statement"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|st| st["Effect"] == "Allow"));
        if !allowed {
            return Ok(Authorization::Denied(
                "the authorizer denied the connection".into(),
            ));
        }
        let user = answer["context"]["user_id"]
            .as_str()
            .or(answer["principalId"].as_str())
            .unwrap_or("");
        let device = match answer["context"]["device_id"].as_str() {
            Some(d) => Some(DeviceId::parse(d).map_err(|_| Error::BadAnswer {
                function: "authorizer".into(),
                detail: "Allow with an invalid device id".into(),
            })?),
            None => None,
        };
        UserId::parse(user)
            .map(|user| Authorization::Allowed(Identity { user, device }))
            .map_err(|_| Error::BadAnswer {
                function: "authorizer".into(),
                detail: format!(
                    "Allow with an invalid user id {:?}",
                    user.chars().take(80).collect::<String>()
                ),
            })
    }

    /// `$connect`: the connection is accepted once it answers 200.
    pub async fn connect(&self, s: &Session) -> Result<(), Error> {
        let event = json!({
            "headers": {},
            "isBase64Encoded": false,
            "requestContext": self.context(&s.connection_id, "$connect", "CONNECT", Some(s)),
        });
        let answer = self.invoke("connect", &event).await?;
        match answer["statusCode"].as_i64() {
            Some(200) => Ok(()),
            other => Err(Error::BadAnswer {
                function: "connect".into(),
                detail: format!("status {other:?}"),
            }),
        }
    }

    /// One text frame, to the function its `action` routes to; the
    /// function answers through `@connections`.
    pub async fn message(
        &self,
        s: &Session,
        text: &str,
        action: Option<&str>,
    ) -> Result<(), Error> {
        let (route_key, function) = route(action);
        let event = json!({
            "requestContext": self.context(&s.connection_id, route_key, "MESSAGE", Some(s)),
            "body": text,
            "isBase64Encoded": false,
        });
        self.invoke(function, &event).await.map(|_| ())
    }

    /// `$disconnect`.
    pub async fn disconnect(&self, s: &Session) {
        let mut ctx = self.context(&s.connection_id, "$disconnect", "DISCONNECT", Some(s));
        ctx["disconnectStatusCode"] = json!(1000);
        let event = json!({"headers": {}, "isBase64Encoded": false, "requestContext": ctx});
        if let Err(e) = self.invoke("disconnect", &event).await {
            tracing::warn!(error = %e, "$disconnect failed");
        }
    }
}
