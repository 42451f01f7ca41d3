//! Opening a connection, writing frames, and saying in one line why a
//! connection could not open or was lost.

use crate::outgoing::Outgoing;
use chat_cli::client::{connect, Ws, WsError, WsMessage};
use futures_util::{Sink, SinkExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::error::{ProtocolError, UrlError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// How long an attempt to connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url` with `token`; `Err` is a one-line reason.
pub async fn open(url: &str, token: &str) -> Result<Ws, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect(url, token)).await {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => Err(connect_failure(&e)),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Why a connection could not open, with what to do about it.
pub fn connect_failure(e: &WsError) -> String {
    match e {
        WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: is the server running? (`cargo run -p conn-tier -- --dev`)".into()
        }
        WsError::Io(io) => io.to_string(),
        WsError::Http(response) if response.status().as_u16() == 401 => {
            "the server refused the token (HTTP 401): give chat the server's secret with \
             --jwt-secret or CHAT_JWT_SECRET"
                .into()
        }
        WsError::Http(response) => format!(
            "the server answered HTTP {} instead of upgrading to a WebSocket: \
             is the URL its /ws endpoint?",
            response.status()
        ),
        WsError::Url(UrlError::TlsFeatureNotEnabled) => {
            "wss:// needs TLS, which this build of chat does not have".into()
        }
        WsError::Url(url) => format!("bad URL: {url}"),
        other => other.to_string(),
    }
}

/// Why a live connection ended, and its close code when it sent one.
#[derive(Debug)]
pub struct Lost {
    pub code: Option<u16>,
    pub why: String,
}

impl Lost {
    pub fn plain(why: &str) -> Lost {
        Lost {
            code: None,
            why: why.to_string(),
        }
    }

    /// A close frame from the server.
    pub fn closed(frame: Option<&CloseFrame>) -> Lost {
        match frame {
            Some(f) => {
                let code = u16::from(f.code);
                Lost {
                    code: Some(code),
                    why: close_reason(code, f.reason.as_str()),
                }
            }
            None => Lost::plain("the server closed the connection"),
        }
    }

    /// A read or write failed.
    pub fn error(e: &WsError) -> Lost {
        match e {
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                Lost::plain("the connection closed")
            }
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                Lost::plain("the connection dropped")
            }
            other => Lost::plain(&other.to_string()),
        }
    }
}

/// A close code (and the server's reason) in words.
pub fn close_reason(code: u16, reason: &str) -> String {
    let what = match code {
        1000 => "closed by the server",
        1001 => "the server is going away",
        1008 => "closed by the server: policy (e.g. this client read too slowly)",
        1009 => "a frame was too large",
        1011 => "the server failed",
        1012 => "the server is restarting",
        1013 => "the server is overloaded",
        _ => "closed by the server",
    };
    let reason = crate::show::clean(reason);
    if reason.is_empty() {
        format!("{what}, code {code}")
    } else {
        format!("{what}, code {code}: {reason}")
    }
}

/// Writes one frame.
pub async fn write<S>(sink: &mut S, frame: &Outgoing) -> Result<(), WsError>
where
    S: Sink<WsMessage, Error = WsError> + Unpin,
{
    sink.send(WsMessage::text(frame.to_json())).await
}

/// Writes frames in order, then flushes.
pub async fn write_all<S>(sink: &mut S, frames: &[Outgoing]) -> Result<(), WsError>
where
    S: Sink<WsMessage, Error = WsError> + Unpin,
{
    for frame in frames {
        sink.feed(WsMessage::text(frame.to_json())).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_says_to_start_the_server() {
        let e = WsError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let line = connect_failure(&e);
        assert!(line.starts_with("connection refused"), "{line}");
        assert!(line.contains("cargo run -p conn-tier"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn close_codes_in_words() {
        assert_eq!(
            close_reason(1012, ""),
            "the server is restarting, code 1012"
        );
        assert_eq!(
            close_reason(1001, "shutting down"),
            "the server is going away, code 1001: shutting down"
        );
        assert_eq!(Lost::plain("x").code, None);
    }
}
