//! The script commands: `chat send` and `chat group` open a connection, sync
//! (the first frame, as on every connection), send one frame, print its
//! answer as JSON on stdout and leave. An error answer is one readable line
//! on stderr and a non-zero exit.

use crate::commands::{self, MsgIds};
use crate::net;
use crate::show::{self, note, say};
use anyhow::{anyhow, bail};
use chat_cli::client::{Ws, WsMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// How long to wait for the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `chat send USER TO TEXT`: prints the `ack`.
pub async fn send(url: &str, token: &str, to: &str, text: &str) -> anyhow::Result<ExitCode> {
    let id = MsgIds::from_clock().fresh();
    let frame = commands::send_frame(&commands::recipient(to), &id, text);
    let answer = request(url, token, frame, |f| {
        (f["type"] == "ack" && f["client_msg_id"] == id.as_str()) || f["type"] == "error"
    })
    .await?;
    Ok(print_answer(&answer))
}

/// `chat group USER NAME MEMBERS...`: prints the `group`.
pub async fn group(
    url: &str,
    token: &str,
    name: &str,
    members: &[String],
) -> anyhow::Result<ExitCode> {
    let frame = json!({"action": "createGroup", "name": name, "members": members});
    let answer = request(url, token, frame, |f| {
        f["type"] == "group" || f["type"] == "error"
    })
    .await?;
    Ok(print_answer(&answer))
}

fn print_answer(answer: &Value) -> ExitCode {
    if answer["type"] == "error" {
        note(&show::error(answer));
        ExitCode::FAILURE
    } else {
        say(&answer.to_string());
        ExitCode::SUCCESS
    }
}

/// Connects, syncs, sends `frame` and waits for the frame `answers` picks.
async fn request(
    url: &str,
    token: &str,
    frame: Value,
    answers: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut ws = net::open(url, token)
        .await
        .map_err(|why| anyhow!("could not connect to {url}: {why}"))?;
    net::write_all(&mut ws, &[json!({"action": "sync"}), frame])
        .await
        .map_err(|e| anyhow!("sending to {url}: {e}"))?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, wait_for(&mut ws, answers))
        .await
        .map_err(|_| anyhow!("no answer from {url} within {} s", ANSWER_TIMEOUT.as_secs()))??;
    let _ = ws.send(WsMessage::Close(None)).await;
    Ok(answer)
}

async fn wait_for(ws: &mut Ws, answers: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(WsMessage::Text(text)) => match serde_json::from_str::<Value>(text.as_str()) {
                Ok(f) if answers(&f) => return Ok(f),
                Ok(_) => {}
                Err(e) => note(&format!(
                    "warning: the server sent a frame that is not JSON ({e}); ignored"
                )),
            },
            Ok(WsMessage::Close(frame)) => {
                bail!(
                    "the server closed the connection before answering ({})",
                    net::Lost::closed(frame.as_ref()).why
                )
            }
            Ok(_) => {}
            Err(e) => bail!(
                "the connection failed before an answer ({})",
                net::Lost::error(&e).why
            ),
        }
    }
    bail!("the server closed the connection before answering")
}
