//! The API Gateway [`Delivery`]: `PostToConnection` on the management API
//! (`https://{domain}/{stage}/@connections/{id}`) that holds a connection.
//!
//! - Each post has its own timeout, so one slow connection never stalls a
//!   fan-out.
//! - A 410 Gone is [`PostError::Gone`]: the caller prunes *that* connection.
//! - Clients are cached per endpoint (a stage has one).

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

pub struct ApiGatewayDelivery {
    conf: aws_config::SdkConfig,
    clients: RwLock<HashMap<String, Client>>,
    /// Bound on one post, retries included.
    post_timeout: Duration,
    /// Replaces every connection's endpoint (local runs, custom domains).
    endpoint_override: Option<String>,
}

impl ApiGatewayDelivery {
    pub fn new(conf: aws_config::SdkConfig, endpoint_override: Option<String>) -> Self {
        ApiGatewayDelivery {
            conf,
            clients: RwLock::new(HashMap::new()),
            post_timeout: Duration::from_secs(3),
            endpoint_override,
        }
    }

    /// Posts signed with this credential rather than the environment's: a
    /// conn-tier cluster's nodes verify it, as API Gateway verifies IAM.
    pub async fn signed_with(key_id: &str, secret: &str) -> Self {
        use aws_sdk_apigatewaymanagement::config::{
            Credentials, Region, SharedCredentialsProvider,
        };
        let conf = crate::config::sdk_config(None)
            .await
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                key_id,
                secret,
                None,
                None,
                "chat-cluster",
            )))
            .region(Region::new("us-east-1"))
            .build();
        Self::new(conf, None)
    }

    /// Posts go to `endpoint` whatever a connection's record says (tests,
    /// and a single callback URL).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint_override = Some(endpoint.into());
        self
    }

    fn client(&self, endpoint: &str) -> Client {
        let endpoint = self.endpoint_override.as_deref().unwrap_or(endpoint);
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
        {
            return c.clone();
        }
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(&self.conf)
            .endpoint_url(endpoint)
            .build();
        let client = Client::from_conf(conf);
        self.clients
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(endpoint.to_string(), client.clone());
        client
    }
}

/// The management endpoint of a WebSocket stage.
pub fn callback_url(domain_name: &str, stage: &str) -> String {
    format!("https://{domain_name}/{stage}")
}

#[async_trait]
impl Delivery for ApiGatewayDelivery {
    async fn post(&self, connection: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError> {
        let call = self
            .client(&connection.endpoint)
            .post_to_connection()
            .connection_id(&connection.connection_id)
            .data(Blob::new(frame.json.to_vec()))
            .send();
        match tokio::time::timeout(self.post_timeout, call).await {
            Err(_) => Err(PostError::Failed("post timed out".into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => match e.as_service_error() {
                Some(PostToConnectionError::GoneException(_)) => Err(PostError::Gone),
                _ => {
                    let gone = e.raw_response().is_some_and(|r| r.status().as_u16() == 410);
                    if gone {
                        Err(PostError::Gone)
                    } else {
                        Err(PostError::Failed(
                            aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&e)
                                .to_string(),
                        ))
                    }
                }
            },
        }
    }
}
