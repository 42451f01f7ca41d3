//! Where a connection's frames go: the services in this process
//! ([`InProcess`]), or the Lambda functions through the Invoke API
//! (`chat_local_apigw::lambda`, feature `lambda`). The socket loop only
//! knows this trait.

use crate::error::Error;
use async_trait::async_trait;
use chat_core::auth::{Authenticator, Identity};
use chat_core::ids::DeviceId;
use chat_core::protocol::{ClientFrame, FrameError};
use chat_core::service::Deferred;
use chat_core::{Chat, Reply, Session};
use std::sync::Arc;

/// Why a connection is refused before the upgrade.
#[derive(Debug)]
pub enum Refusal {
    /// HTTP 401: no valid token.
    Unauthorized(String),
    /// HTTP 401: `?device=` is not a valid device id.
    BadDevice(String),
    /// HTTP 500: the authorizer itself failed.
    Failed(Error),
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// Who a token names, and the connection's device: the token's
    /// `device` claim, else `device` (`?device=`). Runs before the upgrade;
    /// an invalid device is refused like an invalid token.
    async fn authenticate(
        &self,
        token: Option<&str>,
        device: Option<&str>,
        connection_id: &str,
    ) -> Result<Identity, Refusal>;
    /// `$connect`: the connection is accepted once this succeeds.
    async fn connect(&self, session: &Session) -> Result<(), Error>;
    /// One text frame, as the socket parsed it (once). An answer that comes
    /// later (a `send`'s `ack`) is returned as a [`Deferred`], which the
    /// socket awaits in frame order with the connection's other answers;
    /// any other answer goes through `reply` before this returns.
    async fn frame(
        &self,
        session: &Session,
        text: &str,
        frame: Result<ClientFrame, FrameError>,
        reply: &Arc<dyn Reply>,
    ) -> Option<Deferred>;
    /// `$disconnect`.
    async fn disconnect(&self, session: &Session);
}

/// `?device=`, if given: a valid device id, or a refusal (401).
pub fn parse_device(device: Option<&str>) -> Result<Option<DeviceId>, Refusal> {
    device
        .map(DeviceId::parse)
        .transpose()
        .map_err(|e| Refusal::BadDevice(format!("?device=: {e}")))
}

/// The services linked into this process (the default).
pub struct InProcess {
    pub chat: Arc<Chat>,
    pub auth: Authenticator,
    /// This node: its id and endpoint are recorded with its connections.
    pub hub: Arc<crate::hub::Hub>,
}

#[async_trait]
impl Backend for InProcess {
    async fn authenticate(
        &self,
        token: Option<&str>,
        device: Option<&str>,
        _connection_id: &str,
    ) -> Result<Identity, Refusal> {
        let Some(t) = token else {
            return Err(Refusal::Unauthorized(
                "missing token: use ?token= or Authorization: Bearer".into(),
            ));
        };
        let device = parse_device(device)?;
        self.auth
            .identify(t, device)
            .map_err(|e| Refusal::Unauthorized(e.to_string()))
    }

    async fn connect(&self, session: &Session) -> Result<(), Error> {
        let node = self.hub.node();
        Ok(self
            .chat
            .connect(session, &self.hub.endpoint(), Some(&node))
            .await?)
    }

    async fn frame(
        &self,
        session: &Session,
        _text: &str,
        frame: Result<ClientFrame, FrameError>,
        reply: &Arc<dyn Reply>,
    ) -> Option<Deferred> {
        match frame {
            Err(e) => Some(Box::pin(std::future::ready(e.to_frame()))),
            Ok(ClientFrame::Send {
                to,
                client_msg_id,
                text,
            }) => Some(
                self.chat
                    .send_pipelined(session, &to, client_msg_id, text)
                    .await,
            ),
            Ok(other) => {
                self.chat.handle(session, other, reply.as_ref()).await;
                None
            }
        }
    }

    async fn disconnect(&self, session: &Session) {
        if let Err(e) = self.chat.disconnect(&session.connection_id).await {
            tracing::warn!(error = %e, "cannot remove connection record");
        }
    }
}

#[cfg(feature = "lambda")]
mod lambda {
    use super::*;
    use chat_core::protocol::ServerFrame;
    use chat_local_apigw::lambda::{Authorization, LambdaBackend};

    /// API Gateway's side of the Lambda functions.
    #[async_trait]
    impl Backend for LambdaBackend {
        async fn authenticate(
            &self,
            token: Option<&str>,
            device: Option<&str>,
            connection_id: &str,
        ) -> Result<Identity, Refusal> {
            // A bad `?device=` never reaches the authorizer.
            parse_device(device)?;
            match self.authorize(token, device, connection_id).await {
                Ok(Authorization::Allowed(identity)) => Ok(identity),
                Ok(Authorization::Denied(why)) => Err(Refusal::Unauthorized(why)),
                Err(e) => Err(Refusal::Failed(e.into())),
            }
        }

        async fn connect(&self, session: &Session) -> Result<(), Error> {
            Ok(LambdaBackend::connect(self, session).await?)
        }

        async fn frame(
            &self,
            session: &Session,
            text: &str,
            frame: Result<ClientFrame, FrameError>,
            reply: &Arc<dyn Reply>,
        ) -> Option<Deferred> {
            // API Gateway selects the route on the action alone.
            let action = match &frame {
                Ok(f) => Some(f.action()),
                Err(e) => e.action.as_deref(),
            };
            if let Err(e) = self.message(session, text, action).await {
                tracing::error!(error = %e, ?action, "function failed");
                let err = chat_core::Error::Store(e.to_string());
                // A send's error names its client_msg_id: the client resends it.
                let cmid = frame.as_ref().ok().and_then(|f| f.client_msg_id());
                let _ = reply.send(ServerFrame::error(&err, action, cmid)).await;
            }
            // The function answered through @connections already.
            None
        }

        async fn disconnect(&self, session: &Session) {
            LambdaBackend::disconnect(self, session).await
        }
    }
}
