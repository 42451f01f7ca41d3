//! Posts to another node's connection over the simulated network: the
//! stand-in for the `@connections` API (a SigV4-signed HTTP POST in a real
//! cluster), one turmoil TCP connection per post, with the real client's
//! 3 s timeout. The node's side answers `ok` or `gone` ([`serve_posts`]).

use async_trait::async_trait;
use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use chat_management::api::ConnectionHost;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// Where a node takes posts.
pub const POST_PORT: u16 = 9001;

/// A post not answered in this long failed (as the real client's).
const POST_TIMEOUT: Duration = Duration::from_secs(3);

/// [`Delivery`] to other nodes' connections, over turmoil TCP.
pub struct SimPost;

#[async_trait]
impl Delivery for SimPost {
    async fn post(&self, c: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError> {
        let host = c
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let line = format!("{} {}\n", c.connection_id, frame.text());
        let attempt = async move {
            let stream = turmoil::net::TcpStream::connect(host.as_str()).await?;
            let (read, mut write) = stream.into_split();
            write.write_all(line.as_bytes()).await?;
            let mut answer = String::new();
            BufReader::new(read).read_line(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout(POST_TIMEOUT, attempt).await {
            Ok(Ok(a)) if a.trim() == "ok" => Ok(()),
            Ok(Ok(a)) if a.trim() == "gone" => Err(PostError::Gone),
            Ok(Ok(a)) => Err(PostError::Failed(format!("answered {a:?}"))),
            Ok(Err(e)) => Err(PostError::Failed(e.to_string())),
            Err(_) => Err(PostError::Failed("timed out".into())),
        }
    }
}

/// A node's side: each connection carries one post, `<connection id>
/// <frame JSON>`, handed to the hub as the `@connections` API would.
pub async fn serve_posts(
    host: Arc<dyn ConnectionHost>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", POST_PORT)).await?;
    // Owned: dropped (aborted) with the loop.
    let mut posts = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
            Some(_) = posts.join_next() => continue,
        };
        let host = host.clone();
        posts.spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let Some((id, text)) = line.trim_end_matches('\n').split_once(' ') else {
                return;
            };
            let answer = match host.post(id, text.to_string()) {
                Ok(()) => "ok\n",
                Err(_) => "gone\n",
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}
