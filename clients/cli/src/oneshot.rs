//! The script commands: `chat send` and `chat group` open a connection, sync
//! (the first frame, as on every connection), send one frame, print its
//! answer as JSON on stdout and leave. An error answer is one readable line
//! on stderr and a non-zero exit. The answer is picked as a [`ServerFrame`]
//! and printed as the JSON it came as.

use crate::commands;
use crate::net;
use crate::outgoing::{MsgIds, Outgoing};
use crate::show::{self, note, say};
use anyhow::{anyhow, bail};
use chat_cli::client::{Ws, WsMessage};
use chat_core::protocol::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// How long to wait for the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `chat send USER TO TEXT`: prints the `ack`.
pub async fn send(url: &str, token: &str, to: &str, text: &str) -> anyhow::Result<ExitCode> {
    let id = MsgIds::from_clock().fresh();
    let frame = commands::send_frame(&commands::recipient(to), &id, text);
    let answer = request(url, token, frame, |f| match f {
        ServerFrame::Ack { client_msg_id, .. } => *client_msg_id == id,
        ServerFrame::Error { .. } => true,
        _ => false,
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
    let frame = ClientFrame::CreateGroup {
        name: name.to_string(),
        members: members.to_vec(),
    };
    let answer = request(url, token, frame, |f| {
        matches!(f, ServerFrame::Group { .. } | ServerFrame::Error { .. })
    })
    .await?;
    Ok(print_answer(&answer))
}

/// The answer: the frame, and the JSON it came as.
struct Answer {
    frame: ServerFrame,
    json: Value,
}

fn print_answer(answer: &Answer) -> ExitCode {
    match &answer.frame {
        ServerFrame::Error {
            code,
            message,
            client_msg_id,
            action,
        } => {
            note(&show::error(
                code,
                message,
                action.as_deref(),
                client_msg_id.as_deref(),
            ));
            ExitCode::FAILURE
        }
        _ => {
            say(&answer.json.to_string());
            ExitCode::SUCCESS
        }
    }
}

/// Connects, syncs, sends `frame` and waits for the frame `answers` picks.
async fn request(
    url: &str,
    token: &str,
    frame: ClientFrame,
    answers: impl Fn(&ServerFrame) -> bool,
) -> anyhow::Result<Answer> {
    let mut ws = net::open(url, token)
        .await
        .map_err(|why| anyhow!("could not connect to {url}: {why}"))?;
    let frames = [ClientFrame::Sync {}.into(), Outgoing::from(frame)];
    net::write_all(&mut ws, &frames)
        .await
        .map_err(|e| anyhow!("sending to {url}: {e}"))?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, wait_for(&mut ws, answers))
        .await
        .map_err(|_| anyhow!("no answer from {url} within {} s", ANSWER_TIMEOUT.as_secs()))??;
    let _ = ws.send(WsMessage::Close(None)).await;
    Ok(answer)
}

async fn wait_for(ws: &mut Ws, answers: impl Fn(&ServerFrame) -> bool) -> anyhow::Result<Answer> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(WsMessage::Text(text)) => match serde_json::from_str::<Value>(text.as_str()) {
                // Another frame, or one this client cannot decode: not the answer.
                Ok(json) => match serde_json::from_value(json.clone()) {
                    Ok(frame) if answers(&frame) => return Ok(Answer { frame, json }),
                    _ => {}
                },
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
