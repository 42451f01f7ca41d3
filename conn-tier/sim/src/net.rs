//! The simulated wire: a connection to a node is one turmoil TCP stream
//! carrying one frame per line, instead of a WebSocket. A client's first
//! line names its user and device (`hello <user> <device>`: the token check
//! is not what is simulated); after it, each line is a text frame's JSON,
//! `#ping`/`#pong`, or `#close <code> <reason>`. JSON text never holds a raw
//! newline, so a line is a frame.
//!
//! [`lines_socket`] turns the node's end into what conn-tier's socket loop
//! takes (`Stream` of axum messages + `Sink`), so the real loop runs.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One frame as a line (without its newline); `None`: nothing to write.
pub fn encode(msg: &Message) -> Option<String> {
    match msg {
        Message::Text(t) => Some(t.as_str().to_string()),
        Message::Ping(_) => Some("#ping".into()),
        Message::Pong(_) => Some("#pong".into()),
        Message::Close(Some(f)) => Some(format!("#close {} {}", f.code, f.reason.as_str())),
        Message::Close(None) => Some("#close 1005 ".into()),
        Message::Binary(_) => None,
    }
}

/// A line as a frame.
pub fn decode(line: &str) -> Message {
    if line == "#ping" {
        return Message::Ping(Default::default());
    }
    if line == "#pong" {
        return Message::Pong(Default::default());
    }
    if let Some(rest) = line.strip_prefix("#close ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        return Message::Close(Some(CloseFrame {
            code: code.parse().unwrap_or(1005),
            reason: Utf8Bytes::from(reason.to_string()),
        }));
    }
    Message::Text(Utf8Bytes::from(line.to_string()))
}

type Reading = Pin<Box<dyn Stream<Item = Result<Message, String>> + Send>>;
type Writing = Pin<Box<dyn Sink<Message, Error = String> + Send>>;

/// The node's end of a connection, as conn-tier's socket loop takes it.
pub struct LinesSocket {
    reading: Reading,
    writing: Writing,
}

/// Wraps the two halves of a client's stream (its hello line already read).
pub fn lines_socket(read: BufReader<OwnedReadHalf>, write: OwnedWriteHalf) -> LinesSocket {
    let reading = futures_util::stream::unfold(read, |mut r| async move {
        let mut line = String::new();
        match r.read_line(&mut line).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(decode(line.trim_end_matches('\n'))), r)),
            Err(e) => Some((Err(e.to_string()), r)),
        }
    });
    let writing = futures_util::sink::unfold(write, |mut w, msg: Message| async move {
        if let Some(mut line) = encode(&msg) {
            line.push('\n');
            w.write_all(line.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        if matches!(msg, Message::Close(_)) {
            let _ = w.shutdown().await;
        }
        Ok::<_, String>(w)
    });
    LinesSocket {
        // Fused: the socket loop reads on after the end (its linger).
        reading: Box::pin(reading.fuse()),
        writing: Box::pin(writing),
    }
}

impl Stream for LinesSocket {
    type Item = Result<Message, String>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.reading.as_mut().poll_next(cx)
    }
}

impl Sink<Message> for LinesSocket {
    type Error = String;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.writing.as_mut().poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), String> {
        self.writing.as_mut().start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.writing.as_mut().poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.writing.as_mut().poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_the_line_encoding() {
        for m in [
            Message::Text(Utf8Bytes::from_static(r#"{"type":"ack","message_id":3}"#)),
            Message::Close(Some(CloseFrame {
                code: 1013,
                reason: Utf8Bytes::from_static("try again later"),
            })),
        ] {
            assert_eq!(decode(&encode(&m).unwrap()), m);
        }
        assert!(matches!(decode("#ping"), Message::Ping(_)));
    }
}
