//! Posts to another node's connection over the simulated network: the
//! stand-in for the `@connections` API (a SigV4-signed HTTP POST in a real
//! cluster), one turmoil TCP connection per post, with the real client's
//! 3 s timeout. The node's side answers `ok` or `gone` ([`serve_posts`]).
//! A large group's broadcast to another node (`POST /@broadcast` in a real
//! cluster) goes the same way ([`SimBroadcast`]), and is answered with how
//! many connections took it.

use async_trait::async_trait;
use chat_core::ports::NodeRecord;
use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use chat_management::api::{BroadcastRequest, ConnectionHost};
use conn_tier::cluster::broadcast::NodeLink;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// Where a node takes posts.
pub const POST_PORT: u16 = 9001;

/// A post not answered in this long failed (as the real client's).
const POST_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `line` to the node whose management URL is `url`, and reads its
/// one-line answer; times out as the real client does.
async fn exchange(url: &str, line: String) -> Result<String, String> {
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let attempt = async move {
        let stream = turmoil::net::TcpStream::connect(host.as_str()).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.trim().to_string())
    };
    match tokio::time::timeout(POST_TIMEOUT, attempt).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// [`Delivery`] to other nodes' connections, over turmoil TCP.
pub struct SimPost;

#[async_trait]
impl Delivery for SimPost {
    async fn post(&self, c: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError> {
        let line = format!("{} {}\n", c.connection_id, frame.text());
        match exchange(&c.endpoint, line).await {
            Ok(a) if a == "ok" => Ok(()),
            Ok(a) if a == "gone" => Err(PostError::Gone),
            Ok(a) => Err(PostError::Failed(format!("answered {a:?}"))),
            Err(e) => Err(PostError::Failed(e)),
        }
    }
}

/// A large group's frame to another node, over turmoil TCP: one line,
/// `@broadcast <request JSON>`, answered `posted <n>`.
pub struct SimBroadcast {
    /// Broadcasts answered, counted for the run's outcome.
    pub answered: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl NodeLink for SimBroadcast {
    async fn post(&self, node: &NodeRecord, body: &[u8]) -> Result<usize, String> {
        let json = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        let answer = exchange(&node.management_url, format!("{BROADCAST} {json}\n")).await?;
        self.answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        answer
            .strip_prefix("posted ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("answered {answer:?}"))
    }
}

/// What a broadcast line starts with (no connection id does).
const BROADCAST: &str = "@broadcast";

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
            let answer = if id == BROADCAST {
                match serde_json::from_str::<BroadcastRequest>(text) {
                    Ok(b) => format!(
                        "posted {}\n",
                        host.broadcast(&b.users, b.except.as_deref(), b.frame)
                    ),
                    Err(e) => format!("bad request: {e}\n"),
                }
            } else {
                match host.post(id, text.to_string()) {
                    Ok(()) => "ok\n".to_string(),
                    Err(_) => "gone\n".to_string(),
                }
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}
