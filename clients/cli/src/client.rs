//! A small WebSocket client for the chat protocol: the `chat` CLI and the
//! end-to-end tests use it.

use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

/// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) with `?token=`, with
/// `TCP_NODELAY`: a chat frame is small and must leave at once, not wait
/// for the ACK of the previous one (Nagle; docs/benchmarks.md).
pub async fn connect(url: &str, token: &str) -> Result<Ws, WsError> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let (ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("{url}{sep}token={token}"),
        None,
        true,
    )
    .await?;
    Ok(ws)
}
