//! The admin socket: `DATA_DIR/admin.sock`, a Unix socket (mode 0600) on
//! which a running embedded-mode server takes an online backup of its own
//! store, for `conn-tier admin backup` (docs/operations.md, "Backup and
//! restore").
//!
//! Who may use it is whoever may open the file: the server's own user (and
//! root). It is never on the network. One request a connection, a JSON
//! line ([`Request`]); the answer is JSON lines: progress, then `done`
//! with the report, or `error`. One backup runs at a time.

use chat_embedded::backup::BackupReport;
use chat_embedded::EmbeddedStore;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The socket's name in the data directory.
pub const SOCKET: &str = "admin.sock";
/// A request line longer than this is refused.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request, or to take a line of
/// the answer; past it, it is dropped (the backup goes on to its end).
const CLIENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// An online backup to `to`, an absolute path the server writes.
    Backup { to: PathBuf },
}

/// One answer line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Progress { table: String, done: u64, of: u64 },
    Done(serde_json::Value),
    Error(String),
}

/// Binds `dir/admin.sock` (a stale one, left by a server that died, is
/// replaced: the store's lock on `chat.redb`, taken before this, says no
/// other server runs on this directory), readable by this user only.
pub fn bind(dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET);
    let fresh = dir.join(format!("{SOCKET}.new"));
    let _ = std::fs::remove_file(&fresh);
    let listener = UnixListener::bind(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&fresh, &path)?;
    Ok((listener, path))
}

/// Serves the admin socket until `shutdown`, then removes it.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    store: Arc<EmbeddedStore>,
    shutdown: impl Future<Output = ()>,
) {
    let busy = Arc::new(tokio::sync::Semaphore::new(1));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(handle(stream, store.clone(), busy.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

async fn handle(stream: UnixStream, store: Arc<EmbeddedStore>, busy: Arc<tokio::sync::Semaphore>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let read = tokio::time::timeout(CLIENT_WAIT, reader.read_line(&mut line)).await;
    let answer = match read {
        Err(_) => Answer::Error("no request within 10 s".into()),
        Ok(Err(e)) => Answer::Error(format!("reading the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Answer::Error(format!("not a request: {e}")),
            Ok(Request::Backup { to }) => match busy.try_acquire() {
                Err(_) => Answer::Error("a backup is already running".into()),
                Ok(_permit) => backup(&store, to, &mut write).await,
            },
        },
    };
    let _ = send(&mut write, &answer).await;
}

/// Writes one answer line, giving up on a client that does not read it.
async fn send(w: &mut (impl AsyncWriteExt + Unpin), a: &Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(a).unwrap_or_default();
    line.push(b'\n');
    match tokio::time::timeout(CLIENT_WAIT, w.write_all(&line)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Runs the backup on a thread of its own, passing its progress on.
async fn backup(
    store: &Arc<EmbeddedStore>,
    to: PathBuf,
    write: &mut (impl AsyncWriteExt + Unpin),
) -> Answer {
    if !to.is_absolute() {
        return Answer::Error(format!("{}: the path must be absolute", to.display()));
    }
    let (tx, mut rx) = mpsc::channel::<Answer>(64);
    let store = store.clone();
    tracing::info!(to = %to.display(), "online backup started");
    let job = tokio::task::spawn_blocking(move || {
        store.backup(&to, &mut |p| {
            let _ = tx.try_send(Answer::Progress {
                table: p.table.to_string(),
                done: p.done,
                of: p.of,
            });
        })
    });
    let mut listening = true;
    while let Some(p) = rx.recv().await {
        // A client that went away (or stopped reading) does not stop the
        // backup; it gets no more progress.
        if listening && send(write, &p).await.is_err() {
            listening = false;
        }
    }
    match job.await {
        Ok(Ok(report)) => {
            log_done(&report);
            Answer::Done(serde_json::to_value(&report).unwrap_or_default())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "online backup failed");
            Answer::Error(e.to_string())
        }
        Err(e) => Answer::Error(format!("the backup stopped: {e}")),
    }
}

fn log_done(r: &BackupReport) {
    tracing::info!(
        path = %r.path.display(),
        bytes = r.bytes,
        messages = r.counts.messages,
        hash = %r.hash,
        seconds = r.seconds,
        "online backup done"
    );
}
