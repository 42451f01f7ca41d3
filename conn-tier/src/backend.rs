//! Where a connection's frames go: the services in this process
//! ([`InProcess`]), or the Lambda functions through the Invoke API
//! (`crate::lambda`, feature `lambda`). The socket loop only knows this trait.

use async_trait::async_trait;
use chat_core::auth::Authenticator;
use chat_core::ids::UserId;
use chat_core::service::Deferred;
use chat_core::{Chat, Reply, Session};
use std::sync::Arc;

/// Why a connection is refused before the upgrade.
#[derive(Debug)]
pub enum Refusal {
    /// HTTP 401: no valid token.
    Unauthorized(String),
    /// HTTP 500: the authorizer itself failed.
    Failed(String),
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// The user a token names (runs before the upgrade).
    async fn authenticate(
        &self,
        token: Option<&str>,
        connection_id: &str,
    ) -> Result<UserId, Refusal>;
    /// `$connect`: the connection is accepted once this succeeds.
    async fn connect(&self, session: &Session) -> Result<(), String>;
    /// One text frame; answers go through `reply` or the hub. A `send` may
    /// answer later: the returned future posts its `ack`; the socket awaits
    /// these in order while it reads on.
    async fn frame(
        &self,
        session: &Session,
        text: &str,
        reply: &Arc<dyn Reply>,
    ) -> Option<Deferred>;
    /// `$disconnect`.
    async fn disconnect(&self, session: &Session);
}

/// The services linked into this process (the default).
pub struct InProcess {
    pub chat: Arc<Chat>,
    pub auth: Authenticator,
    /// This node's name, recorded as the endpoint of its connections.
    pub node: String,
}

#[async_trait]
impl Backend for InProcess {
    async fn authenticate(
        &self,
        token: Option<&str>,
        _connection_id: &str,
    ) -> Result<UserId, Refusal> {
        match token {
            None => Err(Refusal::Unauthorized(
                "missing token: use ?token= or Authorization: Bearer".into(),
            )),
            Some(t) => self
                .auth
                .verify(t)
                .map_err(|e| Refusal::Unauthorized(e.to_string())),
        }
    }

    async fn connect(&self, session: &Session) -> Result<(), String> {
        self.chat
            .connect(session, &self.node)
            .await
            .map_err(|e| e.to_string())
    }

    async fn frame(
        &self,
        session: &Session,
        text: &str,
        reply: &Arc<dyn Reply>,
    ) -> Option<Deferred> {
        self.chat
            .handle_text_pipelined(session, text, reply.clone())
            .await
    }

    async fn disconnect(&self, session: &Session) {
        if let Err(e) = self.chat.disconnect(&session.connection_id).await {
            tracing::warn!(error = %e, connection = %session.connection_id, "cannot remove connection record");
        }
    }
}
